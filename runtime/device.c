/* runtime/device.c — backend selection (see device.h). */
#include "runtime/device.h"

#include <stdlib.h>
#include <string.h>

const char *device_default(void)
{
    const char *d = getenv("KILN_DEVICE");
    return d && *d ? d : "auto";
}

int device_valid(const char *name)
{
    return name && (!strcmp(name, "cpu") || !strcmp(name, "cuda") || !strcmp(name, "auto"));
}

int device_resolve(const char *name, FILE *log, const char **resolved, char *err, size_t errlen)
{
    if (!name || !strcmp(name, "cpu")) { *resolved = "cpu"; return 0; }
    if (!device_valid(name)) {
        const char *env = getenv("KILN_DEVICE");
        snprintf(err, errlen, "%s takes cpu, cuda or auto, not '%s'", env && !strcmp(env, name) ? "KILN_DEVICE" : "--device",
                 name);
        return 2;
    }
    char why[256] = "";
    if (!cuda_available(why, sizeof why)) {
        if (!strcmp(name, "cuda")) {
            snprintf(err, errlen, "--device cuda: no CUDA device (%s)", why);
            return 2;
        }
        if (log) fprintf(log, "device: cpu (auto: %s)\n", why);
        *resolved = "cpu";
        return 0;
    }
    char card[256];
    if (cuda_device_name(card, sizeof card)) snprintf(card, sizeof card, "unnamed device");
    if (log) fprintf(log, "device: cuda (%s)\n", card);
    *resolved = "cuda";
    return 0;
}

Backend *backend_create(const char *device, const Plan *p, const CudaOptions *o, char *err, size_t errlen)
{
    const char *d = "cpu";
    if (device && strcmp(device, "cpu") && device_resolve(device, NULL, &d, err, errlen)) return NULL;
    if (!strcmp(d, "cpu")) return cpu_backend_create(p, err, errlen);
    CudaOptions def;
    if (!o) { cuda_options_default(&def); o = &def; }
    return cuda_backend_create(p, o, err, errlen);
}
