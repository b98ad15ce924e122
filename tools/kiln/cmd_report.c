/* tools/kiln/cmd_report.c — `kiln report DIR`: the options of the command;
 * the report itself (results.csv, report.md, scatter.svg of a compare
 * folder) is runtime/report/report.h's report_build. */
#include <stdio.h>
#include <string.h>

#include "runtime/report/report.h"
#include "tools/kiln/cmds.h"

/* `kiln report DIR`. */
int cmd_report(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: kiln report DIR\n  merge DIR/**/summary.json into DIR/results.csv, DIR/report.md and "
               "DIR/scatter.svg\n  (a folder with no runs but a results.csv: report.md and scatter.svg drawn "
               "again from it)\n");
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: kiln report DIR\n");
        return 2;
    }
    return report_build(argv[1]);
}
