/* nbdraid: what every subcommand shares: the common options, usage and
 * help, and how results and errors are reported (see cli.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "protocol.h"

struct cli_state cli;

enum { OPT_JSON = 0x10000, OPT_VERSION };

static const struct option common_options[] = {
  { "control", required_argument, NULL, 'C' },
  { "json", no_argument, NULL, OPT_JSON },
  { "help", no_argument, NULL, 'h' },
  { "version", no_argument, NULL, OPT_VERSION },
  { NULL },
};

#define SHORT_OPTIONS "C:h"
#define MAX_OPTIONS 32

static const struct subcommand *const *all;
static size_t nall;

void
cli_set_subcommands (const struct subcommand *const *subcommands, size_t n)
{
  all = subcommands;
  nall = n;
}

/* ------------------------------------------------------------------ */
/* Reporting */

static void
print_object (json_object *o, int flags)
{
  printf ("%s\n", json_object_to_json_string_ext (o, flags |
                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
  fflush (stdout);
  cli.printed = true;
}

void
cli_result (json_object *o)
{
  print_object (o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
}

void
cli_result_line (json_object *o)
{
  print_object (o, JSON_C_TO_STRING_PLAIN);
}

void
cli_result_error (json_object *o, const char *code, const char *message)
{
  json_object_object_add (o, "ok", json_object_new_boolean (0));
  json_object_object_add (o, "error", json_object_new_string (code));
  json_object_object_add (o, "message", json_object_new_string (message));
}

/* The JSON error object, once per run. */
static void
json_error (const char *code, const char *message)
{
  json_object *o;
  char *m = NULL;

  if (cli.error_printed)
    return;
  if (cli.context && asprintf (&m, "%s%s", cli.context, message) == -1)
    m = NULL;
  o = json_object_new_object ();
  json_object_object_add (o, "ok", json_object_new_boolean (0));
  json_object_object_add (o, "error", json_object_new_string (code));
  json_object_object_add (o, "message", json_object_new_string (m ? m : message));
  cli_result (o);
  json_object_put (o);
  free (m);
  cli.error_printed = true;
}

static void
vfail (const char *code, const char *fmt, va_list ap)
{
  char msg[2048];

  vsnprintf (msg, sizeof msg, fmt, ap);
  if (cli.json)
    json_error (code, msg);
  else
    fprintf (stderr, "nbdraid: %s\n", msg);
}

void
cli_fail (const char *code, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vfail (code, fmt, ap);
  va_end (ap);
}

void
cli_fail_errno (int err, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vfail (proto_errno_name (err), fmt, ap);
  va_end (ap);
}

void
cli_refused (const char *code, const char *message)
{
  if (cli.json)
    json_error (code, message);
  else
    fprintf (stderr, "nbdraid: %s: %s\n", code, message);
}

int
cli_usage (const struct subcommand *sc, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (cli.json) {
    char full[1100];

    snprintf (full, sizeof full, "%s%s%s", sc ? sc->name : "", sc ? ": " : "",
              msg);
    json_error (CLI_USAGE, full);
  }
  else if (sc)
    fprintf (stderr, "nbdraid: %s: %s\n"
             "Try 'nbdraid %s --help' for more information.\n",
             sc->name, msg, sc->name);
  else
    fprintf (stderr, "nbdraid: %s\n"
             "Try 'nbdraid --help' for more information.\n", msg);
  return EXIT_USAGE;
}

void
cli_note (const char *fmt, ...)
{
  va_list ap;

  if (cli.json)
    return;
  fputs ("nbdraid: ", stderr);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

int
cli_finish (int status)
{
  if (cli.json && status != 0 && !cli.printed)
    json_error ("EIO", "failed (no further detail)");
  return status;
}

/* ------------------------------------------------------------------ */
/* Usage and help */

static void
synopsis (FILE *fp, const struct subcommand *sc)
{
  fprintf (fp, "  nbdraid %s%s\n", sc->online ? "[-C SOCKET] " : "", sc->synopsis);
}

void
cli_help (FILE *fp, const struct subcommand *sc)
{
  if (sc == NULL) {
    fprintf (fp, "Usage:\n");
    for (size_t i = 0; i < nall; i++)
      synopsis (fp, all[i]);
    fprintf (fp,
"  nbdraid --help | --version\n"
"\n"
"A MEMBER is a file, a block device or an NBD URI.  SIZE takes K, M, G, T.\n"
"Options may come before or after the subcommand.  -C SOCKET may also come\n"
"from NBDRAID_CONTROL.  'nbdraid SUBCOMMAND --help' describes one subcommand;\n"
"see nbdraid(8).\n");
    return;
  }
  fprintf (fp, "Usage:\n");
  synopsis (fp, sc);
  fprintf (fp, "\n%s\n", sc->help);
  fprintf (fp,
"Common options:\n"
"%s"
"  --json              every result and every error as one JSON object on stdout\n"
"  -h, --help          this help\n"
"  --version           print the version\n",
           sc->online
           ? "  -C, --control=SOCKET  the server's control socket (or NBDRAID_CONTROL)\n"
           : "");
}

static void
version (void)
{
  if (cli.json) {
    json_object *o = json_object_new_object ();

    json_object_object_add (o, "ok", json_object_new_boolean (1));
    json_object_object_add (o, "version", json_object_new_string (PACKAGE_VERSION));
    cli_result (o);
    json_object_put (o);
  }
  else
    printf ("nbdraid (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
}

/* ------------------------------------------------------------------ */
/* Options */

/* sc's options then the common ones, in a table getopt_long can use. */
static const struct option *
option_table (const struct subcommand *sc)
{
  static struct option table[MAX_OPTIONS];
  size_t n = 0;

  for (const struct option *o = sc ? sc->options : NULL; o && o->name; o++)
    table[n++] = *o;
  for (const struct option *o = common_options; o->name; o++)
    table[n++] = *o;
  if (n >= MAX_OPTIONS)
    abort ();                   /* a subcommand with too many options */
  table[n] = (struct option) { NULL };
  return table;
}

bool
cli_option_takes_arg (const struct subcommand *sc, const char *name, size_t len)
{
  const struct option *t = option_table (sc), *match = NULL;
  int nmatch = 0;

  for (const struct option *o = t; o->name; o++) {
    if (strncmp (o->name, name, len) != 0)
      continue;
    if (o->name[len] == '\0')
      return o->has_arg == required_argument;
    match = o;
    nmatch++;
  }
  return nmatch == 1 && match->has_arg == required_argument;
}

/* getopt_long refused argv[prev] (or the short option optopt in it). */
static int
bad_option (const struct subcommand *sc, char **argv, int prev)
{
  const char *arg = argv[optind > prev ? optind - 1 : prev];

  if (strncmp (arg, "--", 2) != 0 && optopt != 0 && strchr (SHORT_OPTIONS, optopt))
    return cli_usage (sc, "option '-%c' requires an argument", optopt);
  if (strncmp (arg, "--", 2) != 0)
    return cli_usage (sc, "unknown option '-%c'", optopt);
  if (optopt != 0 && strchr (arg, '='))
    return cli_usage (sc, "option '%.*s' takes no argument",
                      (int) (strchr (arg, '=') - arg), arg);
  if (optopt != 0)
    return cli_usage (sc, "option '%s' requires an argument", arg);
  return cli_usage (sc, "unrecognized option '%s'", arg);
}

int
cli_getopt (const struct subcommand *sc, int argc, char **argv, int *status)
{
  const struct option *table = option_table (sc);

  opterr = 0;
  for (;;) {
    int prev = optind ? optind : 1;
    int c = getopt_long (argc, argv, SHORT_OPTIONS, table, NULL);

    switch (c) {
    case 'C':
      cli.control = optarg;
      break;
    case OPT_JSON:
      cli.json = true;
      break;
    case 'h':
      cli_help (stdout, sc);
      *status = 0;
      return CLI_STOP;
    case OPT_VERSION:
      version ();
      *status = 0;
      return CLI_STOP;
    case '?':
    case ':':
      *status = bad_option (sc, argv, prev);
      return CLI_STOP;
    default:
      return c;
    }
  }
}

/* ------------------------------------------------------------------ */

/* "5" or "raid5" */
int
parse_level (const char *s, int *level)
{
  char *end;
  long v;

  if (strncmp (s, "raid", 4) == 0)
    s += 4;
  if (*s < '0' || *s > '9')
    return -1;
  errno = 0;
  v = strtol (s, &end, 10);
  if (errno || *end || v > 99)
    return -1;
  *level = (int) v;
  return 0;
}
