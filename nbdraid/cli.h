/* nbdraid: what every subcommand shares (cli.c).
 *
 * The command line.  `nbdraid [OPTION]... SUBCOMMAND [OPTION | ARG]...`:
 * options may come before or after the subcommand.  main () finds the
 * subcommand (the first word that is neither an option nor the argument of
 * one), moves it to the front and runs it on the rest; the subcommand reads
 * its options with cli_getopt, which also takes the common ones (-C SOCKET,
 * --json, --help, --version) wherever they are.
 *
 * Output.  Text by default: results on stdout, errors on stderr as
 * "nbdraid: MESSAGE".  With --json, anywhere on the command line, every
 * result and every error is one JSON object on stdout (status --watch
 * prints a stream of them, one per line).  An error object is
 * {"ok": false, "error": CODE, "message": TEXT}, where CODE is the server's
 * errno name when the server refused, the errno name of what failed here
 * (ENOENT: no control socket at that path, ECONNREFUSED: nobody listening
 * on it, ETIMEDOUT: no reply in time, ...), or CLI_USAGE for a command line
 * that does not parse.  Only the first error of a run is printed in JSON:
 * the later ones are its consequences.
 *
 * Exit status: EXIT_SUCCESS, EXIT_FAIL (refused or failed), EXIT_USAGE,
 * and for scripts the codes of `status --test` and `wait` below.
 */
#ifndef NBDRAID_CLI_H
#define NBDRAID_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include <json-c/json.h>

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define EXIT_DEGRADED 1         /* status --test: degraded or rebuilding */
#define EXIT_FAILED 2           /* status --test: the array failed */
#define EXIT_FROZEN 3           /* wait: an action (or a prepared reshape)
                                   is frozen */
#define EXIT_TIMEOUT 4          /* wait: the timeout passed first */
#define EXIT_NO_STATUS 4        /* status --test: no status could be read */

/* The error code of a command line that does not parse. */
#define CLI_USAGE "USAGE"

/* cli_getopt's value for "stop: the exit status is in *status". */
#define CLI_STOP (-2)

/* One subcommand. */
struct subcommand {
  const char *name;
  bool online;                  /* talks to a server: needs -C SOCKET */
  const char *synopsis;         /* what follows "nbdraid " in the usage */
  const char *help;             /* what it does, then its options */
  const struct option *options; /* its own options, NULL-terminated
                                   (NULL: none but the common ones) */
  int (*run) (const struct subcommand *sc, int argc, char **argv);
};

/* The options every subcommand takes. */
struct cli_state {
  bool json;                    /* --json */
  const char *control;          /* -C SOCKET */
  bool printed;                 /* a JSON object went to stdout */
  bool error_printed;           /* ... and it was an error */
  const char *context;          /* JSON error messages start with it */
};

extern struct cli_state cli;

/* Read the next option of argv (argv[0] is the subcommand, optind was
 * reset) for sc: its own options and the common ones, which are handled
 * here.  Returns the `val` of one of sc's options (optarg set), -1 when
 * there are no more, or CLI_STOP with *status set: 0 after --help (sc's
 * usage printed; sc NULL: the general usage) or --version, EXIT_USAGE after
 * an unknown option or a missing argument (reported). */
int cli_getopt (const struct subcommand *sc, int argc, char **argv,
                int *status);

/* Whether any of sc's options or the common ones called name (the part
 * of "--name" or "--name=value" after the dashes, len bytes; a unique
 * abbreviation counts) takes an argument. */
bool cli_option_takes_arg (const struct subcommand *sc, const char *name,
                           size_t len);

/* Print sc's usage and help (sc NULL: the general usage, listing the
 * subcommands from subcommands[0..n)). */
void cli_help (FILE *fp, const struct subcommand *sc);
void cli_set_subcommands (const struct subcommand *const *subcommands,
                          size_t n);

/* Report an error: "nbdraid: MESSAGE" on stderr, or with --json the error
 * object with code (an errno name or CLI_USAGE) on stdout. */
void cli_fail (const char *code, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* The same with an errno value as the code. */
void cli_fail_errno (int err, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* A refusal by the server: "nbdraid: CODE: MESSAGE" on stderr, or the
 * error object. */
void cli_refused (const char *code, const char *message);

/* A usage error in sc (NULL: before any subcommand): "nbdraid: SC: MESSAGE"
 * and a hint on stderr, or the error object with CLI_USAGE.  Returns
 * EXIT_USAGE. */
int cli_usage (const struct subcommand *sc, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* A note for people, on stderr, in text mode only. */
void cli_note (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

/* Print a result object (not consumed): pretty on stdout.  cli_result_line
 * prints it on one line (a stream: status --watch). */
void cli_result (json_object *o);
void cli_result_line (json_object *o);

/* Make o (a result object) an error object too: "ok" false, "error",
 * "message" (wait's timeout: the last status, with why it is no success). */
void cli_result_error (json_object *o, const char *code, const char *message);

/* At exit: with --json, a failure that printed nothing still prints one
 * error object.  Returns status. */
int cli_finish (int status);

/* A level given as "5" or "raid5": 0, or -1 when malformed. */
int parse_level (const char *s, int *level);

#endif
