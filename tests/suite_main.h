/* tests/suite_main.h — the one `main` of the Check suites
 * (tests/suite_main.c, linked into every suite as the library
 * kiln_check_main). It asks the suite file for its suite, runs every test
 * and exits 0 when all passed, 1 otherwise, which is what ctest reads.
 *
 * A suite file defines test_suite(). Inside it, and only there, it may
 * call test_no_fork() and test_at_end(); to skip the whole suite it prints
 * why and calls exit(77) (ctest's SKIP_RETURN_CODE). */
#ifndef KILN_TESTS_SUITE_MAIN_H
#define KILN_TESTS_SUITE_MAIN_H

#include <check.h>

/* The suite to run (defined by each suite file). */
Suite *test_suite(void);

/* Run the tests in this process rather than one forked child each, for
 * suites whose fixtures hold what a fork loses (libgomp's thread pool, a
 * CUDA context). */
void test_no_fork(void);

/* fn runs once after every test has run, in this process (for example to
 * remove a folder test_suite made). */
void test_at_end(void (*fn)(void));

#endif
