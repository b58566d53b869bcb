/* nbdraid: the control-socket client (online subcommands).
 *
 * Each subcommand opens one connection to the server's control socket and
 * sends one or more requests on it, one JSON line each, waiting for each
 * reply before the next (requests carry increasing ids and the reply's id
 * is checked).  Every wait for a reply is bounded: REPLY_TIMEOUT_S for
 * ordinary requests, the requested server-side wait plus REPLY_TIMEOUT_S
 * for `wait`; a server that does not answer in time is an error (exit 1,
 * ETIMEDOUT), never a hang.  Long waits (`wait`, `reshape --wait`, `status
 * --watch`) are a loop of short server-side waits (POLL_S), so the client
 * can show progress between them and a dead server is noticed within the
 * bound.
 *
 * Requests are built by the protocol module (protocol.h: proto_build), so
 * they carry only the field names and types the server accepts, and are
 * checked by the server's own rules before connecting: a command line that
 * does not parse is a usage error (exit 2), a request the protocol refuses
 * is reported as the server would report it ("nbdraid: EINVAL: ...", exit
 * 1), in both cases without connecting.  Member paths are made absolute,
 * because the server runs with / as its working directory.
 *
 * Output: text for people by default; with --json one object per command:
 * the server's reply as it sent it, pretty-printed (reshape: the plan, with
 * "started" and the final "status" added by --start and --wait), or the
 * error object (cli.h).  Progress: a redrawn bar on a terminal, one plain
 * line per poll otherwise, none with --json.
 *
 * Exit status for scripts (cli.h): `status --test` 0 optimal, 1 degraded or
 * a member rebuilding, 2 failed, 4 no status; `wait` (and `reshape --wait`)
 * 0 nothing running, 3 an action frozen (a prepared reshape that was never
 * started is one), 4 timeout.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "control-client.h"
#include "protocol.h"
#include "util.h"

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
  const struct subcommand *sc;
  enum proto_op op;                     /* the subcommand's op */
  const char *name;                     /* its name */
  bool tty;                             /* stdout is a terminal */
};

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
client_connect (struct client *c)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  struct stat st;
  int e;

  if (strlen (c->path) >= sizeof sa.sun_path) {
    cli_fail ("ENAMETOOLONG", "control socket %s: path too long (at most "
              "%zu bytes)", c->path, sizeof sa.sun_path - 1);
    return -1;
  }
  strcpy (sa.sun_path, c->path);
  c->fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd == -1) {
    cli_fail_errno (errno, "socket: %m");
    return -1;
  }
  if (connect (c->fd, (struct sockaddr *) &sa, sizeof sa) == 0)
    return 0;
  e = errno;
  if (e == ECONNREFUSED && stat (c->path, &st) == 0 && !S_ISSOCK (st.st_mode)) {
    e = ENOTSOCK;                          /* Linux refuses a connect to a
                                              file that is not a socket */
    cli_fail_errno (e, "control socket %s: not a socket but a %s (the control "
                    "socket is the path the server was given as control=)",
                    c->path, S_ISDIR (st.st_mode) ? "directory" : "file");
  }
  else if (e == ENOENT)
    cli_fail_errno (e, "control socket %s: connect: %s (is a server running "
                    "with control=%s?)", c->path, strerror (e), c->path);
  else if (e == ECONNREFUSED)
    cli_fail_errno (e, "control socket %s: connect: %s (no server is "
                    "listening on it)", c->path, strerror (e));
  else
    cli_fail_errno (e, "control socket %s: connect: %s", c->path, strerror (e));
  close (c->fd);
  c->fd = -1;
  return -1;
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
      cli_fail_errno (errno, "%s: send: %m", c->path);
      return -1;
    }
    s += n;
    len -= n;
  }
  if (send (c->fd, "\n", 1, MSG_NOSIGNAL) != 1) {
    cli_fail_errno (errno, "%s: send: %m", c->path);
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
        cli_fail ("EPROTO", "%s: reply longer than %u bytes", c->path, MAX_REPLY);
        return -1;
      }
      b = realloc (c->buf, c->cap ? c->cap * 2 : 65536);
      if (b == NULL) {
        cli_fail ("ENOMEM", "out of memory");
        return -1;
      }
      c->buf = b;
      c->cap = c->cap ? c->cap * 2 : 65536;
    }
    left = deadline - now_s ();
    if (left <= 0 || poll (&p, 1, (int) (left * 1000) + 1) == 0) {
      cli_fail ("ETIMEDOUT", "%s: no reply from the server within %.0f s",
                c->path, timeout_s);
      return -1;
    }
    n = recv (c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      cli_fail_errno (errno, "%s: recv: %m", c->path);
      return -1;
    }
    if (n == 0) {
      cli_fail ("ECONNRESET", "%s: the server closed the connection", c->path);
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
 * already been reported. */
static json_object *
call (struct client *c, json_object *req, double timeout_s, bool *ok)
{
  int64_t id = ++c->next_id;
  json_object *reply = NULL, *v;
  size_t len;

  *ok = false;
  if (req == NULL)                      /* refused by request (): reported */
    return NULL;
  if (c->fd == -1 && client_connect (c) == -1) {
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
    cli_fail ("EPROTO", "%s: the server's reply is not a JSON object", c->path);
    goto bad;
  }
  if (json_object_object_get_ex (reply, "id", &v) &&
      json_object_get_type (v) == json_type_null) {
    /* A reply to no request: the connection-level refusal (EACCES...). */
  }
  else if (!json_object_object_get_ex (reply, "id", &v) ||
           json_object_get_type (v) != json_type_int ||
           json_object_get_int64 (v) != id) {
    cli_fail ("EPROTO", "%s: the server's reply does not answer request %"
              PRId64, c->path, id);
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
    cli_refused (e ? json_object_get_string (e) : "EIO",
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
 * checked by the protocol module; NULL after reporting its refusal worded
 * as the server's ("nbdraid: EINVAL: ..."), which call () then skips. */
static json_object *
request (enum proto_op op, const struct proto_args *a)
{
  char err[PROTO_ERRLEN];
  json_object *req;
  int r = proto_build (op, a, &req, err, sizeof err);

  if (r == ENOMEM) {
    fprintf (stderr, "nbdraid: out of memory\n");
    exit (EXIT_FAIL);
  }
  if (r != 0)
    cli_refused (proto_errno_name (r), err);
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

/* Whether a wait reply says the array settled: the server's "settled"
 * (idle is not settled while a recovery is about to begin, e.g. once an
 * away member's grace ends); a server without it: idle or frozen. */
static bool
settled (json_object *st)
{
  json_object *s = jget (st, "settled");
  const char *a = jstr (st, "sync_action");

  if (s && json_object_get_type (s) == json_type_boolean)
    return json_object_get_boolean (s);
  return strcmp (a, "idle") == 0 || strcmp (a, "frozen") == 0;
}

/* Whether st shows a frozen action: a frozen sync action, or a reshape
 * that is prepared (or was frozen) and not running. */
static bool
frozen (json_object *st)
{
  json_object *rs = jget (st, "reshape");

  return strcmp (jstr (st, "sync_action"), "frozen") == 0 ||
         (rs && json_object_get_type (rs) == json_type_object &&
          strcmp (jstr (rs, "state"), "frozen") == 0);
}

/* What is frozen in st, for a message: "the check", "the reshape". */
static const char *
frozen_what (json_object *st)
{
  json_object *p = jget (st, "progress"), *rs = jget (st, "reshape");

  if (p && json_object_get_type (p) == json_type_object)
    return jstr (p, "action");
  if (rs && json_object_get_type (rs) == json_type_object)
    return "reshape";
  return "sync action";
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

/* What status says of an away member, or of one with a map of missed
 * regions (its delta resync to come or under way). */
static void
member_note (json_object *m, char *note, size_t len)
{
  bool away = jget (m, "away_seconds") != NULL, map = jget (m, "missed_regions") != NULL;

  note[0] = '\0';
  if (!away && jget (m, "down") && json_object_get_boolean (jget (m, "down")))
    snprintf (note, len, "  (down: its connection is lost; not used until it is back)");
  else if (away && map)
    snprintf (note, len, "  (away %" PRIu64 " s, %" PRIu64 " regions missed)",
              ju64 (m, "away_seconds"), ju64 (m, "missed_regions"));
  else if (away)
    snprintf (note, len, "  (away %" PRIu64 " s, no map: resynced in full when back)",
              ju64 (m, "away_seconds"));
  else if (map)
    snprintf (note, len, "  (%" PRIu64 " regions missed)", ju64 (m, "missed_regions"));
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
    char h[32], note[160];
    member_note (m, note, sizeof note);
    printf ("  %4s  %-10s %6" PRIu64 "  %12s  %s%s\n",
            role ? json_object_get_string (role) : "-", jstr (m, "state"),
            ju64 (m, "errors"), raid_fmt_size (ju64 (m, "data_offset"), h, sizeof h),
            spec ? json_object_get_string (spec) : "(missing)", note);
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
  if (jget (st, "resync_owed"))
    kv ("Resync Owed", "from %s bytes%s", jstr (st, "resync_owed"),
        strcmp (jstr (st, "health"), "optimal") ? " (runs once the array is optimal)" : "");
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
      s[0] == '/' || (strncmp (s, "...", 3) == 0 && access (s, F_OK) != 0))
    abs = strdup (s);                    /* (a long spec as status lists it) */
  else if ((abs = realpath (s, NULL)) == NULL) {
    char cwd[PATH_MAX];
    if (getcwd (cwd, sizeof cwd) == NULL)
      abs = strdup (s);
    else if (asprintf (&abs, "%s/%s", cwd, s) == -1)
      abs = NULL;
  }
  if (abs == NULL) {
    fprintf (stderr, "nbdraid: out of memory\n");
    exit (EXIT_FAIL);
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
parse_size_arg (const struct opts *o, const char *what, const char *s,
                uint64_t *v)
{
  if (raid_parse_size (s, v) == 0 && *v <= INT64_MAX)
    return 0;
  return cli_usage (o->sc, "%s: invalid size '%s'", what, s);
}

static int
parse_seconds (const struct opts *o, const char *s, double *v)
{
  char *end;

  errno = 0;
  *v = strtod (s, &end);
  if (errno || end == s || *end || !(*v >= 0 && *v <= PROTO_MAX_WAIT_S))
    return cli_usage (o->sc, "--timeout: expected seconds between 0 and %d, "
                      "not '%s'", PROTO_MAX_WAIT_S, s);
  return 0;
}

/* The rest of the command line after the options: nothing, or a usage
 * error naming the first extra word. */
static int
no_arguments (const struct opts *o, int argc, char **argv)
{
  if (optind < argc)
    return cli_usage (o->sc, "unexpected argument '%s'", argv[optind]);
  return 0;
}

/* Every online subcommand needs the socket: -C or NBDRAID_CONTROL. */
static int
need_socket (struct client *c, const struct opts *o)
{
  const char *path = cli.control ? cli.control : getenv ("NBDRAID_CONTROL");

  if (path == NULL || *path == '\0')
    return cli_usage (o->sc, "needs -C SOCKET (or NBDRAID_CONTROL)");
  c->path = path;
  return 0;
}

/* The options of a subcommand that has no own ones (but the common ones):
 * 0, or the exit status to stop with (*stop set). */
static int
common_options_only (struct opts *o, int argc, char **argv, bool *stop)
{
  int ch, r = 0;

  *stop = false;
  while ((ch = cli_getopt (o->sc, argc, argv, &r)) != -1)
    if (ch == CLI_STOP) {
      *stop = true;
      return r;
    }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Waiting with progress */

enum wait_result { WAIT_SETTLED, WAIT_FAILED, WAIT_TIMEOUT };

/* Poll with short server-side waits until the sync action is idle or
 * frozen, or timeout_s (< 0: none) passes.  Shows progress unless --json.
 * *last receives the final status reply (caller releases; NULL when no
 * reply came).  A failure has been reported; a timeout has not. */
static enum wait_result
wait_loop (struct client *c, const struct opts *o, double timeout_s,
           json_object **last)
{
  double deadline = timeout_s < 0 ? INFINITY : now_s () + timeout_s;
  enum wait_result r;
  bool drew = false;

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
      r = WAIT_FAILED;
      break;
    }
    json_object_put (*last);
    *last = st;
    done = settled (st);
    if (!cli.json && o->tty) {
      fputs ("\r\033[K", stdout);
      progress_bar (st, stdout);
      fflush (stdout);
      drew = true;
    }
    else if (!cli.json)
      progress_line (st);
    if (done) {
      r = WAIT_SETTLED;
      break;
    }
    if (now_s () >= deadline) {
      r = WAIT_TIMEOUT;
      break;
    }
  }
  if (drew)
    putchar ('\n');
  return r;
}

/* The exit status of a wait that ended with r and status *last: 0 nothing
 * running, EXIT_FROZEN, EXIT_TIMEOUT (reported here), EXIT_FAIL. */
static int
wait_status (enum wait_result r, json_object *last, double timeout_s)
{
  char msg[256];

  switch (r) {
  case WAIT_FAILED:
    return EXIT_FAIL;
  case WAIT_TIMEOUT:
    if (strcmp (jstr (last, "sync_action"), "idle") == 0)   /* not settled: owed work */
      snprintf (msg, sizeof msg, "timed out after %g s: nothing runs yet, but a "
                "recovery is due when a missing member's member-timeout ends",
                timeout_s);
    else
      snprintf (msg, sizeof msg, "timed out after %g s: %s still running",
                timeout_s, jstr (last, "sync_action"));
    if (cli.json)
      cli_result_error (last, "ETIMEDOUT", msg);
    else
      cli_fail ("ETIMEDOUT", "%s", msg);
    return EXIT_TIMEOUT;
  case WAIT_SETTLED:
    break;
  }
  if (!frozen (last))
    return 0;
  cli_note ("the %s is frozen ('nbdraid start' resumes it)", frozen_what (last));
  return EXIT_FROZEN;
}

/* ------------------------------------------------------------------ */
/* Subcommands */

enum {
  OPT_WATCH = 256, OPT_COUNT, OPT_INTERVAL, OPT_TEST, OPT_LEVEL, OPT_LAYOUT,
  OPT_CHUNK, OPT_RAID_DEVICES, OPT_ADD, OPT_START, OPT_WAIT, OPT_TIMEOUT,
  OPT_WITH, OPT_FORCE,
};

/* Print a successful reply: its JSON, or text from fn (NULL: nothing). */
static void
show (json_object *reply, void (*fn) (json_object *))
{
  if (cli.json)
    cli_result (reply);
  else if (fn)
    fn (reply);
}

/* resize's reply: the size the array has now. */
static void
show_resized (json_object *reply)
{
  json_object *v = jget (reply, "size");
  uint64_t size = v ? (uint64_t) json_object_get_uint64 (v) : 0;
  char h[32];

  printf ("resize: size is now %s (%" PRIu64 " bytes)\n",
          raid_fmt_size (size, h, sizeof h), size);
}

/* Send req (NULL: refused by request ()) and print the result; returns
 * the exit status. */
static int
simple_call (struct client *c, json_object *req, const char *done_msg,
             void (*fn) (json_object *))
{
  bool ok;
  json_object *reply = call (c, req, REPLY_TIMEOUT_S, &ok);

  if (ok) {
    show (reply, fn);
    if (!cli.json && done_msg)
      printf ("%s\n", done_msg);
  }
  json_object_put (reply);
  return ok ? 0 : EXIT_FAIL;
}

/* status --test: the exit status for the health in st; -1 when the
 * health is none of optimal, degraded, failed. */
static int
health_status (json_object *st)
{
  const char *h = jstr (st, "health");
  json_object *ms = jget (st, "members");
  size_t n = ms && json_object_get_type (ms) == json_type_array
    ? json_object_array_length (ms) : 0;

  if (strcmp (h, "failed") == 0)
    return EXIT_FAILED;
  if (strcmp (h, "degraded") == 0)
    return EXIT_DEGRADED;
  if (strcmp (h, "optimal") != 0)
    return -1;
  for (size_t i = 0; i < n; i++)
    if (strcmp (jstr (json_object_array_get_idx (ms, i), "state"),
                "rebuilding") == 0)
      return EXIT_DEGRADED;
  return 0;
}

static const struct option status_options[] = {
  { "watch", no_argument, NULL, OPT_WATCH },
  { "count", required_argument, NULL, OPT_COUNT },
  { "interval", required_argument, NULL, OPT_INTERVAL },
  { "test", no_argument, NULL, OPT_TEST },
  { NULL },
};

static int
status_watch (struct client *c, struct opts *o, long count, double interval)
{
  for (long i = 0; count == 0 || i < count; i++) {
    struct timespec ts = { (time_t) interval,
                           (long) ((interval - (double) (time_t) interval) * 1e9) };
    bool ok;
    json_object *st = call (c, request (PROTO_OP_STATUS, NULL), REPLY_TIMEOUT_S, &ok);

    if (!ok) {
      json_object_put (st);
      return EXIT_FAIL;
    }
    if (cli.json)
      cli_result_line (st);
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

static int
cmd_status (struct client *c, struct opts *o, int argc, char **argv)
{
  bool watch = false, test = false, ok;
  long count = 0;
  double interval = 1;
  json_object *st;
  char *end;
  int ch, r = 0;

  while ((ch = cli_getopt (o->sc, argc, argv, &r)) != -1) {
    switch (ch) {
    case CLI_STOP: return r;
    case OPT_WATCH: watch = true; break;
    case OPT_TEST: test = true; break;
    case OPT_COUNT:
      count = strtol (optarg, &end, 10);
      if (*end || end == optarg || count < 1)
        return cli_usage (o->sc, "--count: expected a positive number");
      break;
    case OPT_INTERVAL:
      interval = strtod (optarg, &end);
      if (*end || end == optarg || !(interval >= 0.05 && interval <= 3600))
        return cli_usage (o->sc, "--interval: expected 0.05 to 3600 seconds");
      break;
    }
  }
  if ((r = no_arguments (o, argc, argv)) != 0)
    return r;
  if (watch && test)
    return cli_usage (o->sc, "--test and --watch do not go together");
  if ((r = need_socket (c, o)) != 0)
    return r;
  if (watch)
    return status_watch (c, o, count, interval);
  st = call (c, request (PROTO_OP_STATUS, NULL), REPLY_TIMEOUT_S, &ok);
  if (!ok) {
    json_object_put (st);
    return test ? EXIT_NO_STATUS : EXIT_FAIL;
  }
  r = test ? health_status (st) : 0;
  if (r == -1 && cli.json)
    cli_result_error (st, "EPROTO", "the status names no known health");
  show (st, status_text);
  if (r == -1) {
    if (!cli.json)
      cli_fail ("EPROTO", "the status names no known health");
    r = EXIT_NO_STATUS;
  }
  json_object_put (st);
  return r;
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
 * EXIT_FAIL after reporting its refusal. */
static int
add_members (struct proto_args *a, const char *const *specs, int n)
{
  char err[PROTO_ERRLEN];

  for (int i = 0; i < n; i++) {
    struct proto_member m = member_arg (specs[i], false);
    int r = proto_add_spec (a, m.spec, err, sizeof err);

    if (r != 0) {
      free ((char *) m.spec);
      cli_refused (proto_errno_name (r), err);
      return EXIT_FAIL;
    }
  }
  return 0;
}

static const struct option reshape_options[] = {
  { "level", required_argument, NULL, OPT_LEVEL },
  { "layout", required_argument, NULL, OPT_LAYOUT },
  { "chunk", required_argument, NULL, OPT_CHUNK },
  { "raid-devices", required_argument, NULL, OPT_RAID_DEVICES },
  { "add", required_argument, NULL, OPT_ADD },
  { "force", no_argument, NULL, OPT_FORCE },
  { "start", no_argument, NULL, OPT_START },
  { "wait", no_argument, NULL, OPT_WAIT },
  { NULL },
};

/* One reshape option into a (or adds); 0 or a usage error's status. */
static int
reshape_option (struct opts *o, int ch, struct proto_args *a,
                const char **adds, int *nadds, bool *start, bool *wait)
{
  char *end;
  long n;

  switch (ch) {
  case OPT_START: *start = true; return 0;
  case OPT_WAIT: *wait = true; return 0;
  case OPT_ADD: adds[(*nadds)++] = optarg; return 0;
  case OPT_FORCE:
    a->force = true;
    proto_set (a, PROTO_ARG_FORCE);
    return 0;
  case OPT_LEVEL:
    proto_set (a, PROTO_ARG_LEVEL);
    if (parse_level (optarg, &a->level) == -1)
      return cli_usage (o->sc, "--level: invalid level '%s'", optarg);
    return 0;
  case OPT_LAYOUT:
    a->layout = optarg;
    proto_set (a, PROTO_ARG_LAYOUT);
    return 0;
  case OPT_CHUNK:
    proto_set (a, PROTO_ARG_CHUNK);
    return parse_size_arg (o, "--chunk", optarg, &a->chunk);
  case OPT_RAID_DEVICES:
    n = strtol (optarg, &end, 10);
    if (*end || end == optarg || n < 1 || n > 1000)
      return cli_usage (o->sc, "--raid-devices: invalid number '%s'", optarg);
    a->raid_devices = (int) n;
    proto_set (a, PROTO_ARG_RAID_DEVICES);
    return 0;
  }
  abort ();                     /* every option in the table is handled */
}

/* The prepared reshape's --start and --wait; *plan is the reply to the
 * reshape request, where --json's result collects what follows. */
static int
reshape_start_wait (struct client *c, struct opts *o, bool start, bool wait,
                    json_object *plan)
{
  json_object *reply, *last;
  enum wait_result w;
  bool ok;
  int r;

  cli.context = "the reshape is prepared (frozen), but: ";
  if (start) {
    reply = call (c, request (PROTO_OP_START, NULL), REPLY_TIMEOUT_S, &ok);
    json_object_put (reply);
    if (!ok)
      return EXIT_FAIL;
    if (cli.json)
      json_object_object_add (plan, "started", json_object_new_boolean (1));
    else
      printf ("reshape started\n");
    cli.context = "the reshape was started, but: ";
  }
  if (!wait)
    return 0;
  w = wait_loop (c, o, -1, &last);
  if (w == WAIT_SETTLED && !cli.json)
    printf ("reshape: %s\n", jstr (last, "sync_action"));
  r = wait_status (w, last, -1);
  if (last && cli.json)
    json_object_object_add (plan, "status", json_object_get (last));
  json_object_put (last);
  return r;
}

static int
cmd_reshape (struct client *c, struct opts *o, int argc, char **argv)
{
  struct proto_args a = { 0 };
  const char **adds = calloc (argc, sizeof *adds);   /* the --add values */
  json_object *req = NULL, *plan = NULL;
  bool start = false, wait = false, ok;
  int ch, r = 0, nadds = 0;

  if (adds == NULL) {
    cli_fail ("ENOMEM", "out of memory");
    return EXIT_FAIL;
  }
  while (r == 0 && (ch = cli_getopt (o->sc, argc, argv, &r)) != -1)
    if (ch == CLI_STOP)
      goto out;
    else
      r = reshape_option (o, ch, &a, adds, &nadds, &start, &wait);
  if (r == 0)
    r = no_arguments (o, argc, argv);
  if (r == 0 && (a.present & ~(1u << PROTO_ARG_FORCE)) == 0 && nadds == 0)
    r = cli_usage (o->sc, "nothing to change: give --level, --layout, "
                   "--chunk, --raid-devices or --add");
  if (r == 0)
    r = need_socket (c, o);
  if (r == 0 && (r = add_members (&a, adds, nadds)) == 0 &&
      (req = request (PROTO_OP_RESHAPE, &a)) == NULL)
    r = EXIT_FAIL;
  if (r != 0)
    goto out;

  plan = call (c, req, REPLY_TIMEOUT_S, &ok);
  if (!ok) {
    r = EXIT_FAIL;
    goto out;
  }
  if (!cli.json)
    plan_text (plan);
  r = reshape_start_wait (c, o, start, wait, plan);
  if (cli.json && r != EXIT_FAIL)
    cli_result (plan);
 out:
  json_object_put (plan);
  free_specs (&a);
  free (adds);
  return r;
}

static const struct option wait_options[] = {
  { "timeout", required_argument, NULL, OPT_TIMEOUT },
  { NULL },
};

static int
cmd_wait (struct client *c, struct opts *o, int argc, char **argv)
{
  double timeout = -1;
  enum wait_result w;
  json_object *last;
  int ch, r = 0;

  while ((ch = cli_getopt (o->sc, argc, argv, &r)) != -1) {
    if (ch == CLI_STOP)
      return r;
    if ((r = parse_seconds (o, optarg, &timeout)) != 0)   /* OPT_TIMEOUT */
      return r;
  }
  if ((r = no_arguments (o, argc, argv)) != 0 || (r = need_socket (c, o)) != 0)
    return r;
  w = wait_loop (c, o, timeout, &last);
  r = wait_status (w, last, timeout);
  if (last && cli.json && r != EXIT_FAIL)
    cli_result (last);
  json_object_put (last);
  return r;
}

/* start, freeze, abort, check, repair */
static int
cmd_action (struct client *c, struct opts *o, int argc, char **argv)
{
  char msg[64];
  bool stop;
  int r = common_options_only (o, argc, argv, &stop);

  if (stop || (r = no_arguments (o, argc, argv)) != 0 ||
      (r = need_socket (c, o)) != 0)
    return r;
  snprintf (msg, sizeof msg, "%s: %s", o->name,
            o->op == PROTO_OP_FREEZE ? "frozen"
            : o->op == PROTO_OP_ABORT ? "aborted" : "started");
  return simple_call (c, request (o->op, NULL), msg, NULL);
}

static const struct option add_options[] = {
  { "force", no_argument, NULL, OPT_FORCE },
  { NULL },
};

static const struct option replace_options[] = {
  { "with", required_argument, NULL, OPT_WITH },
  { NULL },
};

static const struct option resize_options[] = {
  { "force", no_argument, NULL, OPT_FORCE },
  { NULL },
};

/* fail, remove, add, replace */
static int
cmd_member (struct client *c, struct opts *o, int argc, char **argv)
{
  bool is_replace = o->op == PROTO_OP_REPLACE;
  bool is_add = o->op == PROTO_OP_ADD;
  struct proto_args a = { 0 };
  const char *with = NULL;
  json_object *req;
  char msg[PATH_MAX + 64];
  int ch, r = 0;

  while ((ch = cli_getopt (o->sc, argc, argv, &r)) != -1) {
    if (ch == CLI_STOP)
      return r;
    if (ch == OPT_FORCE) {              /* add's only */
      a.force = true;
      proto_set (&a, PROTO_ARG_FORCE);
    }
    else
      with = optarg;                    /* OPT_WITH: replace's only */
  }
  if (optind + 1 != argc)
    return cli_usage (o->sc, "expected exactly one MEMBER");
  if (with && *with && strspn (with, "0123456789") == strlen (with) && access (with, F_OK) != 0)
    return cli_usage (o->sc, "--with=%s: a spare has no role number; name it by its "
                      "path or NBD URI (as status lists it)", with);
  if ((r = need_socket (c, o)) != 0)
    return r;
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
  return simple_call (c, req, msg, NULL);
}

static int
cmd_resize (struct client *c, struct opts *o, int argc, char **argv)
{
  struct proto_args a = { 0 };
  int ch, r = 0;

  while ((ch = cli_getopt (o->sc, argc, argv, &r)) != -1) {
    if (ch == CLI_STOP)
      return r;
    a.force = true;                     /* OPT_FORCE: resize's only */
    proto_set (&a, PROTO_ARG_FORCE);
  }
  if (optind + 1 != argc)
    return cli_usage (o->sc, "expected exactly one SIZE (or max)");
  if (strcmp (argv[optind], "max") == 0)
    a.size = PROTO_SIZE_MAX;
  else if ((r = parse_size_arg (o, "SIZE", argv[optind], &a.size)) != 0)
    return r;
  if ((r = need_socket (c, o)) != 0)
    return r;
  proto_set (&a, PROTO_ARG_SIZE);
  return simple_call (c, request (PROTO_OP_RESIZE, &a), NULL, show_resized);
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
  struct proto_args a = { 0 };
  bool stop;
  int r = common_options_only (o, argc, argv, &stop);

  if (stop)
    return r;
  if (optind >= argc)
    return cli_usage (o->sc, "expected speed-min=SIZE and/or speed-max=SIZE");
  for (int i = optind; i < argc; i++) {
    const char *eq = strchr (argv[i], '=');
    int key = eq ? speed_key (argv[i], eq - argv[i]) : -1;

    if (key == -1)
      return cli_usage (o->sc, "expected speed-min=SIZE or speed-max=SIZE, "
                        "not '%s'", argv[i]);
    if ((r = parse_size_arg (o, proto_arg_name (key), eq + 1,
                             key == PROTO_ARG_SPEED_MIN ? &a.speed_min
                                                        : &a.speed_max)) != 0)
      return r;
    proto_set (&a, key);
  }
  if ((r = need_socket (c, o)) != 0)
    return r;
  return simple_call (c, request (PROTO_OP_SET, &a), "set: done", NULL);
}

/* ------------------------------------------------------------------ */
/* The table */

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

static int
control_run (const struct subcommand *sc, int argc, char **argv)
{
  enum proto_op op = proto_op_lookup (sc->name);
  struct opts o = { .sc = sc, .op = op, .name = sc->name,
                    .tty = isatty (STDOUT_FILENO) };
  struct client c = { .fd = -1 };
  int r;

  if (op == PROTO_OP_NONE)
    abort ();                   /* the table names ops only */
  r = cmds[op] (&c, &o, argc, argv);
  client_close (&c);
  return r;
}

#define ONLINE(name, synopsis, help, options) \
  { name, true, synopsis, help, options, control_run }

const struct subcommand control_subcommands[] = {
  ONLINE ("status", "status [--json] [--watch [--count=N] [--interval=SECONDS]] "
          "[--test]",
          "Show the array: geometry, size, health, sync action, reshape,\n"
          "progress and every member with its role and state.\n"
          "\n"
          "Options:\n"
          "  --watch             repeat (a redrawn screen on a terminal, one\n"
          "                      line per poll otherwise, one JSON object per\n"
          "                      line with --json)\n"
          "  --count=N           with --watch: stop after N polls\n"
          "  --interval=SECONDS  with --watch: between polls (default 1)\n"
          "  --test              exit 0 optimal, 1 degraded or a member\n"
          "                      rebuilding, 2 failed, 4 status not read\n",
          status_options),
  ONLINE ("reshape", "reshape [--level=N] [--layout=NAME] [--chunk=SIZE]\n"
          "                              [--raid-devices=N] [--add=MEMBER]... "
          "[--force] [--start] [--wait]",
          "Prepare a reshape: recorded in every superblock, frozen, nothing\n"
          "moves until it is started.\n"
          "\n"
          "Options:\n"
          "  --level=N           the new level (0, 1, 4, 5, 6)\n"
          "  --layout=NAME       the new layout\n"
          "  --chunk=SIZE        the new chunk size\n"
          "  --raid-devices=N    the new number of members\n"
          "  --add=MEMBER        a new member (repeatable)\n"
          "  --force             take a new member holding a filesystem, a\n"
          "                      partition table or a RAID/LVM signature\n"
          "                      (otherwise refused; it is overwritten)\n"
          "  --start             start it at once\n"
          "  --wait              wait for it as 'wait' does (exit 3: frozen)\n",
          reshape_options),
  ONLINE ("start", "start",
          "Start (or resume) a frozen reshape or sync action.\n", NULL),
  ONLINE ("freeze", "freeze",
          "Stop the running action at a durable checkpoint (frozen).\n", NULL),
  ONLINE ("abort", "abort",
          "Cancel a check or repair, or a prepared reshape that has not moved\n"
          "data.\n", NULL),
  ONLINE ("check", "check",
          "Scrub: count parity mismatches.\n", NULL),
  ONLINE ("repair", "repair",
          "Scrub and rewrite parity that does not match.\n", NULL),
  ONLINE ("wait", "wait [--timeout=SECONDS]",
          "Wait until no action runs.  Exit 0 when nothing runs, 3 when an\n"
          "action is frozen (a prepared reshape that was never started is),\n"
          "4 when the timeout passes first.\n"
          "\n"
          "Options:\n"
          "  --timeout=SECONDS   give up after this long\n",
          wait_options),
  ONLINE ("fail", "fail MEMBER",
          "Mark a member (role number or spec) faulty.\n", NULL),
  ONLINE ("remove", "remove MEMBER",
          "Detach a faulty or spare member (role number or spec).\n", NULL),
  ONLINE ("add", "add [--force] MEMBER",
          "Add a spare; a degraded array starts recovery onto it, a member of\n"
          "this array rejoins.  A new member holding a filesystem, a partition\n"
          "table or a RAID/LVM signature is refused unless --force.\n"
          "\n"
          "Options:\n"
          "  --force             overwrite such a member\n", add_options),
  ONLINE ("replace", "replace MEMBER [--with=MEMBER]",
          "Copy a working member onto a spare while it keeps serving.\n"
          "\n"
          "Options:\n"
          "  --with=MEMBER       the spare to use (default: any)\n",
          replace_options),
  ONLINE ("resize", "resize [--force] SIZE|max",
          "Change the exported size (before a shrinking reshape).  max: all\n"
          "the room the members have now (after they grew).\n"
          "\n"
          "Options:\n"
          "  --force             allow a shrink (the bytes cut off are lost)\n",
          resize_options),
  ONLINE ("set", "set [speed-min=SIZE] [speed-max=SIZE]",
          "Throttle background work (bytes per second; speed-max=0: no\n"
          "limit).\n", NULL),
};

const size_t control_nsubcommands =
  sizeof control_subcommands / sizeof control_subcommands[0];

_Static_assert (sizeof control_subcommands / sizeof control_subcommands[0]
                == PROTO_NOPS, "one subcommand per op");
