/* nbdraid: the control-socket client (online subcommands).
 *
 * Each subcommand opens one connection to the server's control socket and
 * sends one or more requests on it, one JSON line each, waiting for each
 * reply before the next (requests carry increasing ids and the reply's id
 * is checked).  Every wait for a reply is bounded: REPLY_TIMEOUT_S for
 * ordinary requests, the requested server-side wait plus REPLY_TIMEOUT_S
 * for `wait`; a server that does not answer in time is an error (exit 1),
 * never a hang.  Long waits (`wait`, `reshape --wait`, `status --watch`)
 * are a loop of short server-side waits (POLL_S), so the client can show
 * progress between them and a dead server is noticed within the bound.
 *
 * Requests are built by the protocol module (protocol.h: proto_build), so
 * they carry only the field names and types the server accepts, and are
 * checked by the server's own rules before connecting: a command line that
 * does not parse is a usage error (exit 2), a request the protocol refuses
 * is reported as the server would report it ("nbdraid: EINVAL: ...", exit
 * 1), in both cases without connecting.  Member paths are made absolute,
 * because the server runs with / as its working directory.
 *
 * Output: text for people by default; with --json each reply object as the
 * server sent it, pretty-printed.  Progress: a redrawn bar on a terminal,
 * one plain line per poll otherwise.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "control-client.h"
#include "protocol.h"
#include "util.h"

#define EXIT_USAGE 2
#define REPLY_TIMEOUT_S 30
#define POLL_S 1.0                      /* one server-side wait slice */
#define MAX_REPLY (16u << 20)           /* longest reply line accepted */
#define BAR_WIDTH 30

struct client {
  const char *path;
  int fd;
  int64_t next_id;
  char *buf;                            /* received bytes not yet consumed */
  size_t len, cap;
};

struct opts {
  enum proto_op op;                     /* the subcommand's op */
  const char *name;                     /* its name */
  bool json;
  bool tty;                             /* stdout is a terminal */
};


static int __attribute__ ((format (printf, 2, 3)))
usage_error (const char *cmd, const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "nbdraid: %s: ", cmd);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\nTry 'nbdraid --help' for more information.\n");
  return EXIT_USAGE;
}

static double
now_s (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* Connection */

static int
client_connect (struct client *c, const char *path)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };

  c->path = path;
  if (strlen (path) >= sizeof sa.sun_path) {
    error ("%s: control socket path too long", path);
    return -1;
  }
  strcpy (sa.sun_path, path);
  c->fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd == -1) {
    error ("socket: %m");
    return -1;
  }
  if (connect (c->fd, (struct sockaddr *) &sa, sizeof sa) == -1) {
    error ("%s: connect: %m", path);
    close (c->fd);
    c->fd = -1;
    return -1;
  }
  return 0;
}

static void
client_close (struct client *c)
{
  if (c->fd >= 0)
    close (c->fd);
  c->fd = -1;
  free (c->buf);
  c->buf = NULL;
}

static int
send_line (struct client *c, const char *s)
{
  size_t len = strlen (s);

  while (len > 0) {
    ssize_t n = send (c->fd, s, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      error ("%s: send: %m", c->path);
      return -1;
    }
    s += n;
    len -= n;
  }
  if (send (c->fd, "\n", 1, MSG_NOSIGNAL) != 1) {
    error ("%s: send: %m", c->path);
    return -1;
  }
  return 0;
}

/* Read one reply line within timeout_s; returns it NUL-terminated in
 * c->buf (consumed by the next call), its length in *len, or -1. */
static int
read_line (struct client *c, double timeout_s, size_t *len)
{
  double deadline = now_s () + timeout_s;
  char *nl;

  for (;;) {
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    double left;
    ssize_t n;

    if (c->buf && (nl = memchr (c->buf, '\n', c->len)) != NULL) {
      *nl = '\0';
      *len = nl - c->buf;
      return 0;
    }
    if (c->len == c->cap) {
      char *b;
      if (c->cap >= MAX_REPLY) {
        error ("%s: reply longer than %u bytes", c->path, MAX_REPLY);
        return -1;
      }
      b = realloc (c->buf, c->cap ? c->cap * 2 : 65536);
      if (b == NULL) {
        error ("realloc: %m");
        return -1;
      }
      c->buf = b;
      c->cap = c->cap ? c->cap * 2 : 65536;
    }
    left = deadline - now_s ();
    if (left <= 0 || poll (&p, 1, (int) (left * 1000) + 1) == 0) {
      error ("%s: no reply from the server within %.0f s", c->path, timeout_s);
      return -1;
    }
    n = recv (c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      error ("%s: recv: %m", c->path);
      return -1;
    }
    if (n == 0) {
      error ("%s: the server closed the connection", c->path);
      return -1;
    }
    c->len += n;
  }
}

/* Drop the line read_line returned. */
static void
consume_line (struct client *c, size_t len)
{
  memmove (c->buf, c->buf + len + 1, c->len - len - 1);
  c->len -= len + 1;
}

/* Send req (consumed; an "id" is added; NULL: a request that request ()
 * refused) and return the reply object, or NULL after a message.  *ok
 * says whether the server accepted it; on refusal the "CODE: message" has
 * already been printed. */
static json_object *
call (struct client *c, json_object *req, double timeout_s, bool *ok)
{
  int64_t id = ++c->next_id;
  json_object *reply = NULL, *v;
  size_t len;

  *ok = false;
  if (req == NULL)                      /* refused by request (): reported */
    return NULL;
  if (c->fd == -1 && client_connect (c, c->path) == -1) {
    json_object_put (req);
    return NULL;
  }
  json_object_object_add (req, "id", json_object_new_int64 (id));
  if (send_line (c, json_object_to_json_string_ext (req, JSON_C_TO_STRING_PLAIN)) == -1 ||
      read_line (c, timeout_s, &len) == -1)
    goto out;
  reply = json_tokener_parse (c->buf);
  consume_line (c, len);
  if (reply == NULL || !json_object_is_type (reply, json_type_object)) {
    error ("%s: the server's reply is not a JSON object", c->path);
    goto bad;
  }
  if (json_object_object_get_ex (reply, "id", &v) &&
      json_object_get_type (v) == json_type_null) {
    /* A reply to no request: the connection-level refusal (EACCES...). */
  }
  else if (!json_object_object_get_ex (reply, "id", &v) ||
           json_object_get_type (v) != json_type_int ||
           json_object_get_int64 (v) != id) {
    error ("%s: the server's reply does not answer request %" PRId64, c->path, id);
    goto bad;
  }
  if (json_object_object_get_ex (reply, "ok", &v) &&
      json_object_get_type (v) == json_type_boolean && json_object_get_boolean (v)) {
    *ok = true;
    goto out;
  }
  {
    json_object *e = NULL, *m = NULL;
    json_object_object_get_ex (reply, "error", &e);
    json_object_object_get_ex (reply, "message", &m);
    error ("%s: %s", e ? json_object_get_string (e) : "ERROR",
           m ? json_object_get_string (m) : "(no message)");
  }
  goto out;
 bad:
  json_object_put (reply);
  reply = NULL;
 out:
  json_object_put (req);
  return reply;
}

/* The request for op with the arguments in a (NULL: none), built and
 * checked by the protocol module; NULL after printing its refusal worded
 * as the server's ("nbdraid: EINVAL: ..."), which call () then skips. */
static json_object *
request (enum proto_op op, const struct proto_args *a)
{
  char err[PROTO_ERRLEN];
  json_object *req;
  int r = proto_build (op, a, &req, err, sizeof err);

  if (r == ENOMEM) {
    error ("out of memory");
    exit (1);
  }
  if (r != 0)
    error ("%s: %s", proto_errno_name (r), err);
  return req;
}

/* ------------------------------------------------------------------ */
/* Reading reply fields */

static json_object *
jget (json_object *o, const char *key)
{
  json_object *v = NULL;

  if (o == NULL || !json_object_object_get_ex (o, key, &v))
    return NULL;
  return v;
}

static const char *
jstr (json_object *o, const char *key)
{
  json_object *v = jget (o, key);

  return v == NULL ? "-" : json_object_get_string (v);
}

static uint64_t
ju64 (json_object *o, const char *key)
{
  json_object *v = jget (o, key);

  return v == NULL ? 0 : json_object_get_uint64 (v);
}

static bool
settled (json_object *st)
{
  const char *a = jstr (st, "sync_action");

  return strcmp (a, "idle") == 0 || strcmp (a, "frozen") == 0;
}

/* ------------------------------------------------------------------ */
/* Text output */

static const char *
fmt_rate (uint64_t r, char *buf, size_t len)
{
  static const char *const units[] = { "B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s" };
  double d = (double) r;
  int u = 0;

  while (d >= 1024 && u < 4) {
    d /= 1024;
    u++;
  }
  snprintf (buf, len, "%.1f %s", d, units[u]);
  return buf;
}

static const char *
fmt_eta (json_object *p, char *buf, size_t len)
{
  json_object *v = jget (p, "eta_seconds");
  int64_t s;

  if (v == NULL || json_object_get_type (v) != json_type_int)
    return snprintf (buf, len, "--:--"), buf;
  s = json_object_get_int64 (v);
  if (s >= 3600)
    snprintf (buf, len, "%" PRId64 ":%02d:%02d", s / 3600, (int) (s / 60 % 60),
              (int) (s % 60));
  else
    snprintf (buf, len, "%d:%02d", (int) (s / 60), (int) (s % 60));
  return buf;
}

static const char *
fmt_size (uint64_t v, char *buf, size_t len)
{
  char h[32];

  snprintf (buf, len, "%s (%" PRIu64 " bytes)", raid_fmt_size (v, h, sizeof h), v);
  return buf;
}

static double
percent (json_object *p)
{
  uint64_t total = ju64 (p, "total");

  return total ? 100.0 * (double) ju64 (p, "done") / (double) total : 0;
}

/* "reshape [#####.....] 42.0% 512.3 MiB/s ETA 0:12" */
static void
progress_bar (json_object *st, FILE *fp)
{
  json_object *p = jget (st, "progress");
  char rate[32], eta[32];
  double pc;
  int fill;

  if (p == NULL || json_object_get_type (p) != json_type_object) {
    fprintf (fp, "%s", jstr (st, "sync_action"));
    return;
  }
  pc = percent (p);
  fill = (int) (pc / 100 * BAR_WIDTH);
  fill = fill < 0 ? 0 : fill > BAR_WIDTH ? BAR_WIDTH : fill;
  fprintf (fp, "%s%s [", jstr (p, "action"),
           strcmp (jstr (st, "sync_action"), "frozen") == 0 ? " (frozen)" : "");
  for (int i = 0; i < BAR_WIDTH; i++)
    fputc (i < fill ? '#' : '.', fp);
  fprintf (fp, "] %.1f%% %s ETA %s", pc, fmt_rate (ju64 (p, "rate"), rate, sizeof rate),
           fmt_eta (p, eta, sizeof eta));
}

/* One plain line per poll (not a terminal). */
static void
progress_line (json_object *st)
{
  json_object *p = jget (st, "progress");
  char rate[32], eta[32];

  printf ("health %s, sync_action %s", jstr (st, "health"), jstr (st, "sync_action"));
  if (p && json_object_get_type (p) == json_type_object)
    printf (", %s %.1f%% (%" PRIu64 " of %" PRIu64 " bytes), %s, ETA %s",
            jstr (p, "action"), percent (p), ju64 (p, "done"), ju64 (p, "total"),
            fmt_rate (ju64 (p, "rate"), rate, sizeof rate),
            fmt_eta (p, eta, sizeof eta));
  putchar ('\n');
  fflush (stdout);
}

static void
geom_text (json_object *g, char *buf, size_t len)
{
  char h[32];

  snprintf (buf, len, "raid%s %s, chunk %s, %s devices", jstr (g, "level"),
            jstr (g, "layout"), raid_fmt_size (ju64 (g, "chunk"), h, sizeof h),
            jstr (g, "raid_devices"));
}

static void __attribute__ ((format (printf, 2, 3)))
kv (const char *key, const char *fmt, ...)
{
  va_list ap;

  printf ("%16s : ", key);
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  putchar ('\n');
}

static void
status_members (json_object *st)
{
  json_object *ms = jget (st, "members");
  size_t n = ms && json_object_get_type (ms) == json_type_array
    ? json_object_array_length (ms) : 0;

  printf ("\n  %4s  %-10s %6s  %12s  %s\n", "Role", "State", "Errors",
          "Data Offset", "Member");
  for (size_t i = 0; i < n; i++) {
    json_object *m = json_object_array_get_idx (ms, i);
    json_object *role = jget (m, "role"), *spec = jget (m, "spec");
    char h[32];
    printf ("  %4s  %-10s %6" PRIu64 "  %12s  %s\n",
            role ? json_object_get_string (role) : "-", jstr (m, "state"),
            ju64 (m, "errors"), raid_fmt_size (ju64 (m, "data_offset"), h, sizeof h),
            spec ? json_object_get_string (spec) : "(missing)");
  }
}

static void
status_text (json_object *st)
{
  json_object *rs = jget (st, "reshape"), *p = jget (st, "progress");
  char b1[128], b2[128];

  kv ("UUID", "%s", jstr (st, "uuid"));
  kv ("Raid Level", "raid%s", jstr (st, "level"));
  kv ("Layout", "%s", jstr (st, "layout"));
  kv ("Chunk Size", "%s", raid_fmt_size (ju64 (st, "chunk"), b1, sizeof b1));
  kv ("Raid Devices", "%s (%s data)", jstr (st, "raid_devices"), jstr (st, "data_disks"));
  kv ("Array Size", "%s", fmt_size (ju64 (st, "size"), b1, sizeof b1));
  kv ("Health", "%s", jstr (st, "health"));
  kv ("Sync Action", "%s", jstr (st, "sync_action"));
  kv ("Consistency", "%s", jstr (st, "consistency"));
  kv ("Events", "%s", jstr (st, "events"));
  kv ("Mismatch Count", "%s", jstr (st, "mismatch_count"));
  if (jget (st, "speed_min"))
    kv ("Speed Limits", "min %s, max %s",
        fmt_rate (ju64 (st, "speed_min"), b1, sizeof b1),
        ju64 (st, "speed_max") ? fmt_rate (ju64 (st, "speed_max"), b2, sizeof b2)
                               : "unlimited");
  if (rs && json_object_get_type (rs) == json_type_object) {
    kv ("Reshape", "%s, %s, position %" PRIu64 " of %" PRIu64 " bytes, boundary %"
        PRIu64, jstr (rs, "state"), jstr (rs, "direction"), ju64 (rs, "position"),
        ju64 (rs, "total"), ju64 (rs, "boundary"));
    geom_text (jget (rs, "from"), b1, sizeof b1);
    kv ("From", "%s", b1);
    geom_text (jget (rs, "to"), b1, sizeof b1);
    kv ("To", "%s", b1);
  }
  if (p && json_object_get_type (p) == json_type_object) {
    printf ("%16s : ", "Progress");
    progress_bar (st, stdout);
    putchar ('\n');
  }
  status_members (st);
}

static void
print_json (json_object *o)
{
  printf ("%s\n", json_object_to_json_string_ext (o, JSON_C_TO_STRING_PRETTY |
                                                  JSON_C_TO_STRING_SPACED |
                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* ------------------------------------------------------------------ */
/* Argument helpers */

/* A member on the command line: a role number (when role_ok), an NBD
 * URI, or a path, made absolute (the server's working directory is /).
 * The spec is malloc'ed (free_specs); exits when out of memory. */
static struct proto_member
member_arg (const char *s, bool role_ok)
{
  struct proto_member m = { .role = -1 };
  char *abs = NULL;

  if (role_ok && *s && strspn (s, "0123456789") == strlen (s) && strlen (s) < 6)
    return (struct proto_member) { .role = atoi (s) };
  if (strncmp (s, "nbd://", 6) == 0 || strncmp (s, "nbds://", 7) == 0 ||
      strncmp (s, "nbd+unix://", 11) == 0 || strncmp (s, "nbds+unix://", 12) == 0 ||
      s[0] == '/')
    abs = strdup (s);
  else if ((abs = realpath (s, NULL)) == NULL) {
    char cwd[PATH_MAX];
    if (getcwd (cwd, sizeof cwd) == NULL)
      abs = strdup (s);
    else if (asprintf (&abs, "%s/%s", cwd, s) == -1)
      abs = NULL;
  }
  if (abs == NULL) {
    error ("out of memory");
    exit (1);
  }
  m.spec = abs;
  return m;
}

/* Release the specs member_arg made for a's arguments. */
static void
free_specs (struct proto_args *a)
{
  free ((char *) a->member.spec);
  free ((char *) a->with);
  for (int i = 0; i < a->nadd; i++)
    free ((char *) a->add[i]);
}

static int
parse_size_arg (const char *cmd, const char *what, const char *s, uint64_t *v)
{
  if (raid_parse_size (s, v) == 0 && *v <= INT64_MAX)
    return 0;
  return usage_error (cmd, "%s: invalid size '%s'", what, s);
}

static int
parse_seconds (const char *cmd, const char *s, double *v)
{
  char *end;

  errno = 0;
  *v = strtod (s, &end);
  if (errno || end == s || *end || !(*v >= 0 && *v <= PROTO_MAX_WAIT_S))
    return usage_error (cmd, "--timeout: expected seconds between 0 and %d, "
                        "not '%s'", PROTO_MAX_WAIT_S, s);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Waiting with progress */

/* Poll with short server-side waits until the sync action is idle or
 * frozen, or timeout_s (< 0: none) passes.  Shows progress unless --json.
 * Returns 0 settled, 1 failed or timed out; *last receives the final
 * status reply (caller releases). */
static int
wait_loop (struct client *c, const struct opts *o, double timeout_s,
           json_object **last)
{
  double deadline = timeout_s < 0 ? INFINITY : now_s () + timeout_s;
  bool drew = false;
  int r;

  *last = NULL;
  for (;;) {
    double left = deadline - now_s (), slice = left < POLL_S ? left : POLL_S;
    struct proto_args a = { .timeout = slice > 0 ? slice : 0 };
    json_object *st;
    bool ok, done;

    proto_set (&a, PROTO_ARG_TIMEOUT);
    st = call (c, request (PROTO_OP_WAIT, &a), a.timeout + REPLY_TIMEOUT_S, &ok);
    if (!ok) {
      json_object_put (st);
      r = 1;
      break;
    }
    json_object_put (*last);
    *last = st;
    done = settled (st);
    if (!o->json && o->tty) {
      fputs ("\r\033[K", stdout);
      progress_bar (st, stdout);
      fflush (stdout);
      drew = true;
    }
    else if (!o->json)
      progress_line (st);
    if (done) {
      r = 0;
      break;
    }
    if (now_s () >= deadline) {
      if (drew)
        putchar ('\n');
      drew = false;
      error ("timed out after %g s: %s still running", timeout_s,
             jstr (st, "sync_action"));
      r = 1;
      break;
    }
  }
  if (drew)
    putchar ('\n');
  return r;
}

/* ------------------------------------------------------------------ */
/* Subcommands */

enum {
  OPT_JSON = 256, OPT_WATCH, OPT_COUNT, OPT_INTERVAL, OPT_LEVEL, OPT_LAYOUT,
  OPT_CHUNK, OPT_RAID_DEVICES, OPT_ADD, OPT_START, OPT_WAIT, OPT_TIMEOUT, OPT_WITH,
};

/* Print a successful reply: its JSON, or text from fn (NULL: nothing). */
static void
show (const struct opts *o, json_object *reply, void (*fn) (json_object *))
{
  if (o->json)
    print_json (reply);
  else if (fn)
    fn (reply);
}

/* Send req (NULL: refused by request ()) and print the result; returns
 * the exit status. */
static int
simple_call (struct client *c, const struct opts *o, json_object *req,
             const char *done_msg, void (*fn) (json_object *))
{
  bool ok;
  json_object *reply = call (c, req, REPLY_TIMEOUT_S, &ok);

  if (ok) {
    show (o, reply, fn);
    if (!o->json && done_msg)
      printf ("%s\n", done_msg);
  }
  json_object_put (reply);
  return ok ? 0 : 1;
}

static int
cmd_status (struct client *c, struct opts *o, int argc, char **argv)
{
  static const struct option lopts[] = {
    { "json", no_argument, NULL, OPT_JSON },
    { "watch", no_argument, NULL, OPT_WATCH },
    { "count", required_argument, NULL, OPT_COUNT },
    { "interval", required_argument, NULL, OPT_INTERVAL },
    { NULL },
  };
  bool watch = false;
  long count = 0;
  double interval = 1;
  char *end;
  int ch;

  while ((ch = getopt_long (argc, argv, "", lopts, NULL)) != -1) {
    switch (ch) {
    case OPT_JSON: o->json = true; break;
    case OPT_WATCH: watch = true; break;
    case OPT_COUNT:
      count = strtol (optarg, &end, 10);
      if (*end || end == optarg || count < 1)
        return usage_error (o->name, "--count: expected a positive number");
      break;
    case OPT_INTERVAL:
      interval = strtod (optarg, &end);
      if (*end || end == optarg || !(interval >= 0.05 && interval <= 3600))
        return usage_error (o->name, "--interval: expected 0.05 to 3600 seconds");
      break;
    default: return usage_error (o->name, "bad option");
    }
  }
  if (optind < argc)
    return usage_error (o->name, "unexpected argument '%s'", argv[optind]);
  if (!watch)
    return simple_call (c, o, request (PROTO_OP_STATUS, NULL), NULL, status_text);

  for (long i = 0; count == 0 || i < count; i++) {
    struct timespec ts = { (time_t) interval,
                           (long) ((interval - (double) (time_t) interval) * 1e9) };
    bool ok;
    json_object *st = call (c, request (PROTO_OP_STATUS, NULL), REPLY_TIMEOUT_S, &ok);

    if (!ok) {
      json_object_put (st);
      return 1;
    }
    if (o->json)
      printf ("%s\n", json_object_to_json_string_ext (st, JSON_C_TO_STRING_PLAIN |
                                                      JSON_C_TO_STRING_NOSLASHESCAPE));
    else if (o->tty) {
      fputs ("\033[H\033[2J", stdout);
      status_text (st);
    }
    else
      progress_line (st);
    fflush (stdout);
    json_object_put (st);
    if (count == 0 || i + 1 < count)
      nanosleep (&ts, NULL);
  }
  return 0;
}

static void
plan_text (json_object *plan)
{
  json_object *rs = jget (plan, "reshape");
  char from[128], to[128];

  if (rs == NULL || json_object_get_type (rs) != json_type_object) {
    printf ("reshape prepared\n");
    return;
  }
  geom_text (jget (rs, "from"), from, sizeof from);
  geom_text (jget (rs, "to"), to, sizeof to);
  printf ("reshape prepared (%s, %s): %s -> %s\n", jstr (rs, "state"),
          jstr (rs, "direction"), from, to);
}

/* Add the --add members to a, by the protocol's rule for the list; 0, or
 * 1 after printing its refusal. */
static int
add_members (struct proto_args *a, const char *const *specs, int n)
{
  char err[PROTO_ERRLEN];

  for (int i = 0; i < n; i++) {
    struct proto_member m = member_arg (specs[i], false);
    int r = proto_add_spec (a, m.spec, err, sizeof err);

    if (r != 0) {
      free ((char *) m.spec);
      error ("%s: %s", proto_errno_name (r), err);
      return 1;
    }
  }
  return 0;
}

static int
cmd_reshape (struct client *c, struct opts *o, int argc, char **argv)
{
  static const struct option lopts[] = {
    { "json", no_argument, NULL, OPT_JSON },
    { "level", required_argument, NULL, OPT_LEVEL },
    { "layout", required_argument, NULL, OPT_LAYOUT },
    { "chunk", required_argument, NULL, OPT_CHUNK },
    { "raid-devices", required_argument, NULL, OPT_RAID_DEVICES },
    { "add", required_argument, NULL, OPT_ADD },
    { "start", no_argument, NULL, OPT_START },
    { "wait", no_argument, NULL, OPT_WAIT },
    { NULL },
  };
  struct proto_args a = { 0 };
  const char **adds = calloc (argc, sizeof *adds);   /* the --add values */
  json_object *req = NULL, *last;
  bool start = false, wait = false;
  int ch, r = 0, nadds = 0;
  char *end;
  long n;

  if (adds == NULL) {
    error ("out of memory");
    return 1;
  }
  while (r == 0 && (ch = getopt_long (argc, argv, "", lopts, NULL)) != -1) {
    switch (ch) {
    case OPT_JSON: o->json = true; break;
    case OPT_START: start = true; break;
    case OPT_WAIT: wait = true; break;
    case OPT_LEVEL:
      if (parse_level (optarg, &a.level) == -1)
        r = usage_error (o->name, "--level: invalid level '%s'", optarg);
      proto_set (&a, PROTO_ARG_LEVEL);
      break;
    case OPT_LAYOUT:
      a.layout = optarg;
      proto_set (&a, PROTO_ARG_LAYOUT);
      break;
    case OPT_CHUNK:
      r = parse_size_arg (o->name, "--chunk", optarg, &a.chunk);
      proto_set (&a, PROTO_ARG_CHUNK);
      break;
    case OPT_RAID_DEVICES:
      n = strtol (optarg, &end, 10);
      if (*end || end == optarg || n < 1 || n > 1000)
        r = usage_error (o->name, "--raid-devices: invalid number '%s'", optarg);
      a.raid_devices = (int) n;
      proto_set (&a, PROTO_ARG_RAID_DEVICES);
      break;
    case OPT_ADD: adds[nadds++] = optarg; break;
    default:
      r = usage_error (o->name, "bad option");
    }
  }
  if (r == 0 && optind < argc)
    r = usage_error (o->name, "unexpected argument '%s'", argv[optind]);
  if (r == 0 && a.present == 0 && nadds == 0)
    r = usage_error (o->name, "nothing to change: give --level, --layout, "
                     "--chunk, --raid-devices or --add");
  if (r == 0 && (r = add_members (&a, adds, nadds)) == 0 &&
      (req = request (PROTO_OP_RESHAPE, &a)) == NULL)
    r = 1;
  free_specs (&a);
  free (adds);
  if (r != 0)
    return r;

  if ((r = simple_call (c, o, req, NULL, plan_text)) != 0)
    return r;
  if (start &&
      (r = simple_call (c, o, request (PROTO_OP_START, NULL), "reshape started",
                        NULL)) != 0)
    return r;
  if (!wait)
    return 0;
  r = wait_loop (c, o, -1, &last);
  if (last && o->json)
    print_json (last);
  else if (last && r == 0)
    printf ("reshape: %s\n", jstr (last, "sync_action"));
  json_object_put (last);
  return r;
}

static int
cmd_wait (struct client *c, struct opts *o, int argc, char **argv)
{
  static const struct option lopts[] = {
    { "json", no_argument, NULL, OPT_JSON },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { NULL },
  };
  double timeout = -1;
  json_object *last;
  int ch, r;

  while ((ch = getopt_long (argc, argv, "", lopts, NULL)) != -1) {
    if (ch == OPT_JSON)
      o->json = true;
    else if (ch == OPT_TIMEOUT) {
      if ((r = parse_seconds (o->name, optarg, &timeout)) != 0)
        return r;
    }
    else
      return usage_error (o->name, "bad option");
  }
  if (optind < argc)
    return usage_error (o->name, "unexpected argument '%s'", argv[optind]);
  r = wait_loop (c, o, timeout, &last);
  if (last && o->json)
    print_json (last);
  json_object_put (last);
  return r;
}

/* start, freeze, abort, check, repair */
static int
cmd_action (struct client *c, struct opts *o, int argc, char **argv)
{
  static const struct option lopts[] = {
    { "json", no_argument, NULL, OPT_JSON },
    { NULL },
  };
  char msg[64];
  int ch;

  while ((ch = getopt_long (argc, argv, "", lopts, NULL)) != -1) {
    if (ch != OPT_JSON)
      return usage_error (o->name, "bad option");
    o->json = true;
  }
  if (optind < argc)
    return usage_error (o->name, "unexpected argument '%s'", argv[optind]);
  snprintf (msg, sizeof msg, "%s: %s", o->name,
            o->op == PROTO_OP_FREEZE ? "frozen"
            : o->op == PROTO_OP_ABORT ? "aborted" : "started");
  return simple_call (c, o, request (o->op, NULL), msg, NULL);
}

/* fail, remove, add, replace */
static int
cmd_member (struct client *c, struct opts *o, int argc, char **argv)
{
  static const struct option lopts[] = {
    { "json", no_argument, NULL, OPT_JSON },
    { "with", required_argument, NULL, OPT_WITH },
    { NULL },
  };
  bool is_replace = o->op == PROTO_OP_REPLACE;
  bool is_add = o->op == PROTO_OP_ADD;
  struct proto_args a = { 0 };
  const char *with = NULL;
  json_object *req;
  char msg[PATH_MAX + 64];
  int ch;

  while ((ch = getopt_long (argc, argv, "", lopts, NULL)) != -1) {
    if (ch == OPT_JSON)
      o->json = true;
    else if (ch == OPT_WITH && is_replace)
      with = optarg;
    else
      return usage_error (o->name, ch == OPT_WITH ? "--with is only for replace"
                                                  : "bad option");
  }
  if (optind + 1 != argc)
    return usage_error (o->name, "expected exactly one MEMBER");
  a.member = member_arg (argv[optind], !is_add);
  proto_set (&a, PROTO_ARG_MEMBER);
  if (with) {
    a.with = member_arg (with, false).spec;
    proto_set (&a, PROTO_ARG_WITH);
  }
  req = request (o->op, &a);
  free_specs (&a);
  snprintf (msg, sizeof msg, "%s: %s %s", o->name, argv[optind],
            is_add ? "added" : is_replace ? "is being replaced"
            : o->op == PROTO_OP_FAIL ? "marked faulty" : "removed");
  return simple_call (c, o, req, msg, NULL);
}

static int
cmd_resize (struct client *c, struct opts *o, int argc, char **argv)
{
  static const struct option lopts[] = {
    { "json", no_argument, NULL, OPT_JSON },
    { NULL },
  };
  struct proto_args a = { 0 };
  char msg[128], h[32];
  int ch, r;

  while ((ch = getopt_long (argc, argv, "", lopts, NULL)) != -1) {
    if (ch != OPT_JSON)
      return usage_error (o->name, "bad option");
    o->json = true;
  }
  if (optind + 1 != argc)
    return usage_error (o->name, "expected exactly one SIZE");
  if ((r = parse_size_arg (o->name, "SIZE", argv[optind], &a.size)) != 0)
    return r;
  proto_set (&a, PROTO_ARG_SIZE);
  snprintf (msg, sizeof msg, "resize: size is now %s (%" PRIu64 " bytes)",
            raid_fmt_size (a.size, h, sizeof h), a.size);
  return simple_call (c, o, request (PROTO_OP_RESIZE, &a), msg, NULL);
}

/* The argument that KEY in KEY=SIZE names: speed_min or speed_max, also
 * spelt with a hyphen; -1 for anything else. */
static int
speed_key (const char *key, size_t klen)
{
  static const enum proto_arg keys[] = { PROTO_ARG_SPEED_MIN, PROTO_ARG_SPEED_MAX };

  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    const char *name = proto_arg_name (keys[i]);
    size_t j = 0;

    while (j < klen && name[j] && (key[j] == name[j] ||
                                   (key[j] == '-' && name[j] == '_')))
      j++;
    if (j == klen && name[j] == '\0')
      return keys[i];
  }
  return -1;
}

static int
cmd_set (struct client *c, struct opts *o, int argc, char **argv)
{
  static const struct option lopts[] = {
    { "json", no_argument, NULL, OPT_JSON },
    { NULL },
  };
  struct proto_args a = { 0 };
  int ch, r;

  while ((ch = getopt_long (argc, argv, "", lopts, NULL)) != -1) {
    if (ch != OPT_JSON)
      return usage_error (o->name, "bad option");
    o->json = true;
  }
  if (optind >= argc)
    return usage_error (o->name, "expected speed-min=SIZE and/or speed-max=SIZE");
  for (int i = optind; i < argc; i++) {
    const char *eq = strchr (argv[i], '=');
    int key = eq ? speed_key (argv[i], eq - argv[i]) : -1;

    if (key == -1)
      return usage_error (o->name, "expected speed-min=SIZE or speed-max=SIZE, "
                          "not '%s'", argv[i]);
    if ((r = parse_size_arg (o->name, proto_arg_name (key), eq + 1,
                             key == PROTO_ARG_SPEED_MIN ? &a.speed_min
                                                        : &a.speed_max)) != 0)
      return r;
    proto_set (&a, key);
  }
  return simple_call (c, o, request (PROTO_OP_SET, &a), "set: done", NULL);
}

/* One subcommand per op of the protocol, named after it. */
static int (*const cmds[PROTO_NOPS]) (struct client *c, struct opts *o,
                                      int argc, char **argv) = {
  [PROTO_OP_STATUS] = cmd_status, [PROTO_OP_WAIT] = cmd_wait,
  [PROTO_OP_RESHAPE] = cmd_reshape,
  [PROTO_OP_START] = cmd_action, [PROTO_OP_FREEZE] = cmd_action,
  [PROTO_OP_ABORT] = cmd_action, [PROTO_OP_CHECK] = cmd_action,
  [PROTO_OP_REPAIR] = cmd_action,
  [PROTO_OP_FAIL] = cmd_member, [PROTO_OP_REMOVE] = cmd_member,
  [PROTO_OP_ADD] = cmd_member, [PROTO_OP_REPLACE] = cmd_member,
  [PROTO_OP_RESIZE] = cmd_resize, [PROTO_OP_SET] = cmd_set,
};

int
control_is_subcommand (const char *name)
{
  return proto_op_lookup (name) != PROTO_OP_NONE;
}

int
control_main (int argc, char **argv, const char *socket_path)
{
  static char prog[64];
  enum proto_op op = argc > 0 ? proto_op_lookup (argv[0]) : PROTO_OP_NONE;
  struct opts o = { .op = op, .tty = isatty (STDOUT_FILENO) };
  struct client c = { .fd = -1, .path = socket_path };
  int r;

  if (op == PROTO_OP_NONE) {
    error ("unknown subcommand '%s'", argc > 0 ? argv[0] : "");
    return EXIT_USAGE;
  }
  o.name = proto_op_name (op);
  if (socket_path == NULL || *socket_path == '\0')
    return usage_error (o.name, "needs -C SOCKET (or NBDRAID_CONTROL)");
  /* getopt names the subcommand in its own messages. */
  snprintf (prog, sizeof prog, "nbdraid %s", o.name);
  argv[0] = prog;
  optind = 0;
  opterr = 1;
  r = cmds[op] (&c, &o, argc, argv);
  client_close (&c);
  return r;
}
