/* runtime/run_state.h — internal to run_train (run.h): the state of one run
 * that its four stages share, and the functions each stage's file offers.
 *
 *   run.c         the stages in order, set-up (device, graph, data, split,
 *                 the strategy's phases and auto's batch) and the finish
 *                 (test accuracy, --save, the result line)
 *   run_folder.c  the run folder: creation, the resume checkpoint and its
 *                 checks, config.json, metrics.csv, plan.txt, summary.json
 *   run_phase.c   the phase loop: per phase plan, backend, parameters,
 *                 feature cache, loop state (fresh or resumed), the training
 *                 loop with its hooks (metrics rows, progress, checkpoints,
 *                 best weights)
 *   run_auto.c    the auto strategy's choices: batch from memory, LR from a
 *                 range test
 *
 * Every stage function returns 0 or the run's exit code (2 bad input, 1 a
 * failure while running, 130 interrupted) with the message in Run.err; the
 * caller stops at the first non-zero. Nothing here is freed by a stage:
 * run_release (run.c) frees everything the stages made, whatever was reached.
 */
#ifndef KILN_RUN_STATE_H
#define KILN_RUN_STATE_H

#include <stdio.h>

#include "runtime/checkpoint.h"
#include "runtime/run.h"

/* What the training loop's hooks need: kept for the whole run, as the
 * collapse warning's peak and the progress line's clock span the phases. */
typedef struct {
    const RunConfig *c;
    const Plan *plan;
    const Dataset *ds;          /* its class names go into every weights file */
    FILE *log;
    FILE *metrics;              /* dir/metrics.csv open for appending, or NULL */
    int tty;
    double log_every, last_log; /* timed progress lines (not a terminal) */
    int num_classes, n_val;
    double peak;                /* best validation accuracy so far, any phase */
    int peak_phase, peak_epoch;
    int warned;                 /* the collapse since the last epoch above chance was reported */
    int *collapsed;             /* RunResult.collapsed_epoch of this phase */
    int phase, max_epochs;
    Checkpoint *ck;             /* template: prev-phase fields filled */
    char dir[1024];             /* the run folder, or "" for none */
    int failed;                 /* a write failed: the loop stops at the next checkpoint */
    char msg[1024];             /* the first failure, for the run's error */
} Hooks;

typedef struct {
    /* the call */
    const RunConfig *c;
    RunShared *sh;              /* the caller's, or a local one */
    RunResult *r;
    char *err;
    size_t errlen;
    FILE *log;
    double t0;                  /* when the call began */

    /* set-up */
    const char *device;         /* resolved: cpu or cuda */
    TrainSpec spec;             /* the configuration, auto's choices filled in */
    Graph g;
    const InputAttr *in;        /* g's input layer */
    const char *dir;            /* the run folder (--out, or --resume's), or NULL */
    char key[1024];             /* what the data set in sh was loaded from */
    Dataset *ds;                /* sh's */
    Split sp;
    Preproc pp;
    int phases;
    LrGroups groups;            /* the last strategy_apply's */

    /* resumption and checkpoints */
    Checkpoint ck;              /* the one written at every epoch end (settings filled at set-up) */
    Checkpoint resume;          /* --resume's last.ckpt */
    int have_resume;
    int finished;               /* --resume of a finished run: nothing more to do */

    /* the phases */
    Plan plans[2];
    int nplans;                 /* plans built */
    Backend *be[2];
    float *params;              /* the current phase's starting parameters */
    DataView dv;
    long steps_done;            /* by this call, for stop_after_steps */
    Hooks hk;

    char save_err[1024];        /* --save's failure, reported after summary.json */
} Run;

/* dir/file into buf. */
void run_path(char *buf, size_t n, const char *dir, const char *file);

/* ---- run_folder.c ---- */

/* The folder: --out and --resume agree, the path fits, the folder exists and
 * takes a file, --save's path takes one too, and --resume's last.ckpt loads
 * and is of this architecture (R->resume, R->have_resume). Needs R->g. */
int folder_open(Run *R);
/* The run's settings into R->ck (when there is a folder); with --resume, the
 * checkpoint's must equal them and its state fit this run; a finished run
 * sets R->finished (and R->r from its summary). Needs the data and spec. */
int folder_check_resume(Run *R);
/* A new run's config.json (phase 0's groups applied to R->g), and
 * metrics.csv: created with its header, or on resume cut back to the
 * checkpoint's epoch and opened for appending (R->hk.metrics). */
int folder_start(Run *R);
/* dir/plan.txt for plan p. */
int folder_write_plan(Run *R, const Plan *p);
/* At the end: a new run's config.json again (auto's choices and the last
 * phase's groups), and summary.json from R->r. */
int folder_finish(Run *R);

/* ---- run_phase.c ---- */

/* Phase ph from plan to result: plan and backend, parameters (initial,
 * loaded, or carried over from phase 0), the feature cache, the loop state
 * (fresh, or the checkpoint's), train_phase with the hooks, R->r's phase
 * fields. A phase that a resume has passed only builds its plan. Returns 130
 * when interrupted (a checkpoint was written); a divergence ends the run's
 * phases at ph (R->phases). */
int phase_run(Run *R, int ph);
/* Where a phase stands, in the same words when a run stops and when it
 * resumes: the epoch under way (1-based) and the steps of it done. */
void where_text(char *buf, size_t n, int phase, const LoopState *ls, int steps);

/* ---- run_auto.c ---- */

/* The largest power-of-two batch from 8 to 256 (and n_train) whose plan fits
 * the memory budget (--memory-budget, else 90% of the GPU's free memory,
 * else half the physical memory); says so on log. -1 with err set when
 * even 8 does not fit. */
int auto_batch(Graph *g, const RunConfig *c, const char *device, int n_train, FILE *log, char *err,
               size_t errlen);
/* The LR of an LR range test on be from its current weights (restored
 * afterwards); says so on log. */
float auto_lr(Backend *be, const DataView *dv, const PhaseConfig *pc, FILE *log);

#endif
