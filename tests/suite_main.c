/* tests/suite_main.c — the one `main` of the Check suites (see
 * suite_main.h). Built as a static library, so a program that defines its
 * own main does not pull this one in. */
#include "tests/suite_main.h"

#include <stdlib.h>

static int no_fork;
static void (*at_end)(void);

void test_no_fork(void) { no_fork = 1; }

void test_at_end(void (*fn)(void)) { at_end = fn; }

int main(void)
{
    SRunner *sr = srunner_create(test_suite());
    if (no_fork) srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (at_end) at_end();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
