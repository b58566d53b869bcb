/* nbdraid: create, inspect and (through a running server's control socket)
 * manage nbdkit-raid arrays.
 *
 * Structure: main() parses the global options (-C SOCKET, --help), looks the
 * subcommand up in a table and hands it the rest of the command line.  Each
 * table entry says whether the subcommand works offline on the members
 * themselves (create, examine) or talks to a server through the control
 * socket (the "online" ones, which need -C or NBDRAID_CONTROL).
 *
 * Exit status, for every subcommand: 0 success, 1 the operation failed or
 * was refused (the reason on stderr, prefixed "nbdraid: "), 2 usage error.
 * Nothing but a subcommand's result goes to stdout.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "cli.h"
#include "control-client.h"
#include "create.h"
#include "geometry.h"
#include "journal.h"
#include "layout.h"
#include "member.h"
#include "sb.h"
#include "util.h"

#define EXIT_USAGE 2
#define HISTORY_MAX 8           /* records shown by examine */

struct subcommand {
  const char *name;
  bool online;                  /* talks to a server: needs -C SOCKET */
  int (*run) (const struct subcommand *sc, const char *control,
              int argc, char **argv);
};

static void
log_to_stderr (enum raid_log_level lvl, const char *msg)
{
  if (lvl != RAID_LOG_DEBUG)
    fprintf (stderr, "nbdraid: %s\n", msg);
}

static void
usage (FILE *fp)
{
  fprintf (fp,
"Usage:\n"
"  nbdraid create --level=LEVEL [--chunk=SIZE] [--layout=NAME] [--size=SIZE]\n"
"                 [--consistency=journal|bitmap|resync] [--data-offset=SIZE]\n"
"                 [--assume-clean] [--spare=MEMBER]... [--force] MEMBER...\n"
"  nbdraid examine [--json] MEMBER...\n"
"  nbdraid -C SOCKET status [--json] [--watch]\n"
"  nbdraid -C SOCKET reshape [--level=N] [--layout=NAME] [--chunk=SIZE]\n"
"                            [--raid-devices=N] [--add=MEMBER]... [--start] [--wait]\n"
"  nbdraid -C SOCKET start|freeze|abort|check|repair|wait\n"
"  nbdraid -C SOCKET fail|remove|add|replace MEMBER [--with=MEMBER]\n"
"  nbdraid -C SOCKET resize SIZE\n"
"  nbdraid -C SOCKET set speed-min=SIZE speed-max=SIZE\n"
"\n"
"A MEMBER is a file, a block device or an NBD URI.  SIZE takes K, M, G, T.\n"
"-C SOCKET may also come from NBDRAID_CONTROL.  See nbdraid(8).\n");
}

/* Report a usage error in a subcommand; returns EXIT_USAGE. */
static int __attribute__ ((format (printf, 2, 3)))
usage_error (const struct subcommand *sc, const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "nbdraid: %s: ", sc->name);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\nTry 'nbdraid --help' for more information.\n");
  return EXIT_USAGE;
}

/* getopt_long already said what is wrong with the option. */
static int
bad_option (void)
{
  fprintf (stderr, "Try 'nbdraid --help' for more information.\n");
  return EXIT_USAGE;
}

/* Make getopt_long restart on a subcommand's argv, and name the subcommand
 * in getopt's own messages. */
static void
subcommand_getopt_reset (char **argv, const char *name)
{
  static char prog[64];

  snprintf (prog, sizeof prog, "nbdraid %s", name);
  argv[0] = prog;
  optind = 0;
  opterr = 1;
}

/* ---- create ---- */

enum {
  OPT_LEVEL = 256, OPT_CHUNK, OPT_LAYOUT, OPT_SIZE, OPT_CONSISTENCY,
  OPT_DATA_OFFSET, OPT_ASSUME_CLEAN, OPT_SPARE, OPT_FORCE, OPT_JSON,
};

/* Parse a SIZE option; returns 0, or EXIT_USAGE after a message. */
static int
parse_size_opt (const struct subcommand *sc, const char *opt,
                const char *s, uint64_t *v)
{
  if (raid_parse_size (s, v) == 0)
    return 0;
  return usage_error (sc, "--%s: invalid size '%s'%s", opt, s,
                      errno == ERANGE ? " (too large)" : "");
}

/* Apply one create option to o.  Returns 0, 1 (refused) or EXIT_USAGE. */
static int
create_option (const struct subcommand *sc, int c, const char *arg,
               struct raid_create_opts *o, const char **spares)
{
  uint64_t v;
  int r;

  switch (c) {
  case OPT_LEVEL:
    if (parse_level (arg, &o->level) == -1)
      return usage_error (sc, "--level: invalid level '%s'", arg);
    return 0;
  case OPT_CHUNK:
    if ((r = parse_size_opt (sc, "chunk", arg, &v)) != 0)
      return r;
    if (v == 0 || v > RAID_CHUNK_MAX) {
      error ("chunk %" PRIu64 " is not a power of two between 4K and 64M", v);
      return 1;
    }
    o->chunk = (uint32_t) v;
    return 0;
  case OPT_LAYOUT:
    o->layout = raid_layout_parse (arg);
    if (o->layout == -1) {
      error ("unknown layout '%s'", arg);
      return 1;
    }
    return 0;
  case OPT_SIZE:
    if ((r = parse_size_opt (sc, "size", arg, &o->size)) != 0)
      return r;
    if (o->size == 0) {
      error ("size 0 is too small for a member");
      return 1;
    }
    return 0;
  case OPT_CONSISTENCY:
    o->consistency = sb_consistency_parse (arg);
    if (o->consistency == -1)
      return usage_error (sc, "--consistency: expected journal, bitmap or "
                          "resync, not '%s'", arg);
    return 0;
  case OPT_DATA_OFFSET:
    if ((r = parse_size_opt (sc, "data-offset", arg, &o->data_offset)) != 0)
      return r;
    if (o->data_offset == 0) {
      error ("data offset 0 is below the end of the metadata area "
             "(%u bytes: superblock journal and consistency area)",
             RAID_META_END);
      return 1;
    }
    return 0;
  case OPT_ASSUME_CLEAN:
    o->assume_clean = true;
    return 0;
  case OPT_FORCE:
    o->force = true;
    return 0;
  case OPT_SPARE:
    spares[o->nspares++] = arg;
    return 0;
  }
  abort ();                     /* every option in the table is handled */
}

static int
cmd_create (const struct subcommand *sc, const char *control,
            int argc, char **argv)
{
  static const struct option opts[] = {
    { "level", required_argument, NULL, OPT_LEVEL },
    { "chunk", required_argument, NULL, OPT_CHUNK },
    { "layout", required_argument, NULL, OPT_LAYOUT },
    { "size", required_argument, NULL, OPT_SIZE },
    { "consistency", required_argument, NULL, OPT_CONSISTENCY },
    { "data-offset", required_argument, NULL, OPT_DATA_OFFSET },
    { "assume-clean", no_argument, NULL, OPT_ASSUME_CLEAN },
    { "spare", required_argument, NULL, OPT_SPARE },
    { "force", no_argument, NULL, OPT_FORCE },
    { "help", no_argument, NULL, 'h' },
    { NULL },
  };
  struct raid_create_opts o = { .level = -1, .layout = -1 };
  const char **spares = calloc (argc, sizeof *spares);
  uint8_t uuid[RAID_UUID_LEN];
  char us[RAID_UUID_STRLEN], err[512];
  int c, r = 0;

  if (spares == NULL) {
    error ("calloc: %m");
    return 1;
  }
  subcommand_getopt_reset (argv, sc->name);
  while (r == 0 && (c = getopt_long (argc, argv, "h", opts, NULL)) != -1) {
    if (c == 'h') {
      usage (stdout);
      free (spares);
      return 0;
    }
    r = c == '?' ? bad_option () : create_option (sc, c, optarg, &o, spares);
  }
  if (r == 0 && o.level == -1)
    r = usage_error (sc, "--level is required");
  if (r == 0 && optind >= argc)
    r = usage_error (sc, "no members given");
  if (r == 0) {
    o.members = (const char *const *) &argv[optind];
    o.nmembers = argc - optind;
    o.spares = spares;
    if (raid_create (&o, uuid, err, sizeof err) == -1) {
      error ("%s", err);
      r = 1;
    }
    else {
      raid_uuid_format (uuid, us);
      printf ("%s\n", us);
    }
  }
  free (spares);
  return r;
}

/* ---- examine: gathering ---- */

enum sb_status { SBS_VALID, SBS_NONE, SBS_CORRUPT, SBS_UNSUPPORTED, SBS_UNREADABLE };

static const char *const sb_status_names[] = {
  "valid", "none", "corrupt", "unsupported", "unreadable",
};

struct exam {
  const char *spec;
  enum sb_status status;
  char why[320];                /* when not valid */
  char note[256];               /* when valid: sb_read_newest's ro_compat note */
  bool have_ring;
  struct sb_ring ring;          /* when have_ring */
  const struct raid_sb *sb;     /* newest record, when valid */
  const struct sb_member_entry *self; /* this member's table entry or NULL */
  /* The write-hole log (policy journal): its records of the current epoch
   * as replay would judge them. */
  bool have_log;
  int log_valid, log_torn, log_invalid;
  char log_first[256];          /* the first invalid record, or "" */
};

static int
log_record (void *arg, uint64_t pos, uint8_t *rec, const char *kind, const char *why)
{
  struct exam *x = arg;

  if (rec)
    x->log_valid++;
  else if (strcmp (kind, "torn") == 0)
    x->log_torn++;
  else if (x->log_invalid++ == 0)
    snprintf (x->log_first, sizeof x->log_first, "offset %" PRIu64 ": %s",
              x->sb->cons_offset + pos, why);
  return 0;
}

/* The write-hole log of a valid record whose policy is journal: which
 * records replay would apply and which it would skip, and why. */
static void
examine_log (struct exam *x, struct member *m)
{
  struct layout cur, next;
  struct journal_view v;
  uint8_t *area;

  if (x->sb->consistency != SB_CONS_JOURNAL ||
      layout_from_sb (x->sb, LAYOUT_CUR, &cur, NULL, 0) < 0 ||
      (x->sb->reshape_state != SB_RESHAPE_NONE &&
       layout_from_sb (x->sb, LAYOUT_NEXT, &next, NULL, 0) < 0) ||
      (area = raid_alloc_aligned (x->sb->cons_size)) == NULL)
    return;
  if (member_pread (m, area, x->sb->cons_size, x->sb->cons_offset) == 0) {
    journal_view_init (&v, x->sb, &cur,
                       x->sb->reshape_state != SB_RESHAPE_NONE ? &next : NULL);
    journal_scan (&v, area, x->sb->cons_size, log_record, x);
    x->have_log = true;
  }
  free (area);
}

/* Read one member's ring and classify it. */
static void
examine_read (struct exam *x)
{
  struct member *m;
  struct raid_sb tmp;
  int r;

  m = member_open (x->spec, true, x->why, sizeof x->why);
  if (m == NULL) {
    size_t n = strlen (x->spec);

    x->status = SBS_UNREADABLE;     /* drop member_open's "SPEC: " prefix */
    if (strncmp (x->why, x->spec, n) == 0 && strncmp (x->why + n, ": ", 2) == 0)
      memmove (x->why, x->why + n + 2, strlen (x->why + n + 2) + 1);
    return;
  }
  if (member_size (m) < SB_RING_SIZE) {
    x->status = SBS_NONE;
    snprintf (x->why, sizeof x->why,
              "no superblock (the member is smaller than the journal ring)");
    goto out;
  }
  r = sb_ring_read (m, &x->ring);
  if (r != 0) {
    x->status = SBS_UNREADABLE;
    snprintf (x->why, sizeof x->why, "reading the journal ring: %s",
              strerror (r));
    goto out;
  }
  x->have_ring = true;
  r = sb_read_newest (m, &tmp, x->note, sizeof x->note);
  if (r == 0 && x->ring.nvalid > 0) {
    x->status = SBS_VALID;
    x->sb = &x->ring.rec[0];
    x->self = sb_find_member ((struct raid_sb *) x->sb, x->sb->member_uuid);
    examine_log (x, m);
  }
  else if (r == EPROTONOSUPPORT) {
    x->status = SBS_UNSUPPORTED;
    snprintf (x->why, sizeof x->why, "%s", x->note);
  }
  else if (r != 0 && r != ENOENT) {
    x->status = SBS_UNREADABLE;
    snprintf (x->why, sizeof x->why, "reading the journal ring: %s",
              strerror (r));
  }
  else if (x->ring.ncorrupt > 0) {
    x->status = SBS_CORRUPT;
    snprintf (x->why, sizeof x->why, "all %d records are corrupt (%s)",
              x->ring.ncorrupt, x->ring.first_error);
  }
  else {
    x->status = SBS_NONE;
    snprintf (x->why, sizeof x->why, "no superblock");
  }
  if (x->status != SBS_VALID)
    x->note[0] = '\0';
 out:
  member_close (m);
}

static const char *
fmt_time (uint64_t ns, char *buf, size_t len)
{
  time_t t = (time_t) (ns / 1000000000);
  struct tm tm;

  if (gmtime_r (&t, &tm) == NULL ||
      strftime (buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    snprintf (buf, len, "?");
  return buf;
}

static int
sb_data_disks (int level, int layout,
               uint32_t chunk, uint32_t disks)
{
  struct raid_geom g;
  char err[128];

  if (raid_geom_init (&g, level, layout, chunk, (int) disks,
                      err, sizeof err) == -1)
    return -1;
  return g.data_disks;
}

static const char *
layout_name (uint32_t layout)
{
  const char *n = raid_layout_name ((int) layout);
  return n ? n : "unknown";
}

/* ---- examine: text ---- */

static void __attribute__ ((format (printf, 2, 3)))
kv (const char *key, const char *fmt, ...)
{
  va_list ap;

  printf ("%18s : ", key);
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  putchar ('\n');
}

static void
kv_size (const char *key, uint64_t v)
{
  char h[32];

  kv (key, "%s (%" PRIu64 " bytes)", raid_fmt_size (v, h, sizeof h), v);
}

static void
text_geometry (const char *key, uint32_t level, uint32_t layout,
               uint32_t chunk, uint32_t disks)
{
  char h[32];

  kv (key, "raid%" PRIu32 ", %s, chunk %s, %" PRIu32 " devices",
      level, layout_name (layout), raid_fmt_size (chunk, h, sizeof h), disks);
}

static void
text_reshape (const struct raid_sb *sb)
{
  if (sb->reshape_state == SB_RESHAPE_NONE) {
    kv ("Reshape", "none");
    return;
  }
  kv ("Reshape", "%s, %s, position %" PRIu64,
      sb_reshape_state_name (sb->reshape_state),
      sb->reshape_direction == SB_DIR_BACKWARD ? "backward" : "forward",
      sb->reshape_position);
  text_geometry ("Reshape To", sb->new_level, sb->new_layout,
                 sb->new_chunk, sb->new_raid_devices);
  kv_size ("New Array Size", sb->new_array_size);
}

static void
text_members (const struct raid_sb *sb)
{
  char u[RAID_UUID_STRLEN];

  printf ("  Member table:\n"
          "    %4s %4s %-10s %-36s %12s %15s %15s %6s\n",
          "slot", "role", "state", "uuid", "data_offset",
          "new_data_offset", "recovery_offset", "errors");
  for (uint32_t i = 0; i < sb->nmembers && i < SB_MAX_MEMBERS; i++) {
    const struct sb_member_entry *e = &sb->members[i];
    bool self = memcmp (e->uuid, sb->member_uuid, RAID_UUID_LEN) == 0;
    char role[16];

    if (e->role >= 0)
      snprintf (role, sizeof role, "%" PRId32, e->role);
    else
      snprintf (role, sizeof role, "-");
    raid_uuid_format (e->uuid, u);
    printf ("    %4" PRIu32 " %4s %-10s %-36s %12" PRIu64 " %15" PRIu64
            " %15" PRIu64 " %6" PRIu32 "%s\n",
            i, role, sb_member_state_name (e->state), u, e->data_offset,
            e->new_data_offset, e->recovery_offset, e->errors,
            self ? "  <- this member" : "");
  }
}

static void
text_ring (const struct exam *x)
{
  char t[64];

  kv ("Journal Ring", "%u slots: %d valid, %d corrupt, %d empty",
      SB_RING_SLOTS, x->ring.nvalid, x->ring.ncorrupt, x->ring.nempty);
  if (x->ring.ncorrupt > 0)
    kv ("First Rejected", "%s", x->ring.first_error);
  if (x->ring.nvalid == 0)
    return;
  printf ("  History (newest first):\n");
  for (int i = 0; i < x->ring.nvalid && i < HISTORY_MAX; i++)
    printf ("    events %-10" PRIu64 " %s\n", x->ring.rec[i].events,
            fmt_time (x->ring.rec[i].utime_ns, t, sizeof t));
}

static void
text_record (const struct exam *x)
{
  const struct raid_sb *sb = x->sb;
  char u[RAID_UUID_STRLEN], t[64];
  int dd = sb_data_disks (sb->level, sb->layout, sb->chunk, sb->raid_disks);

  kv ("Format", "version %" PRIu32 ", features compat 0x%" PRIx64
      ", ro_compat 0x%" PRIx64 ", incompat 0x%" PRIx64, sb->version,
      sb->feature_compat, sb->feature_ro_compat, sb->feature_incompat);
  kv ("Array UUID", "%s", (raid_uuid_format (sb->array_uuid, u), u));
  kv ("Member UUID", "%s", (raid_uuid_format (sb->member_uuid, u), u));
  if (x->self && x->self->role >= 0)
    kv ("Role", "%" PRId32 " (%s)", x->self->role,
        sb_member_state_name (x->self->state));
  else
    kv ("Role", "%s", x->self ? sb_member_state_name (x->self->state)
                              : "not in the member table");
  kv ("Events", "%" PRIu64, sb->events);
  kv ("Created", "%s", fmt_time (sb->ctime_ns, t, sizeof t));
  kv ("Updated", "%s", fmt_time (sb->utime_ns, t, sizeof t));
  kv ("Level", "raid%" PRIu32, sb->level);
  kv ("Layout", "%s", layout_name (sb->layout));
  kv_size ("Chunk", sb->chunk);
  kv ("Raid Devices", "%" PRIu32 " (%d data)", sb->raid_disks, dd);
  if (x->self)
    kv_size ("Data Offset", x->self->data_offset);
  kv_size ("Component Size", sb->component_size);
  kv_size ("Array Size", sb->array_size);
  kv_size ("Member Size", sb->member_size);
  kv ("Consistency", "%s (area at %" PRIu64 ", %" PRIu64 " bytes)",
      sb_consistency_name (sb->consistency), sb->cons_offset, sb->cons_size);
  kv ("State", "%s", sb->flags & SB_FLAG_DIRTY ? "dirty" : "clean");
  if (sb->resync_offset == UINT64_MAX)
    kv ("Resync", "in sync");
  else
    kv ("Resync", "needed from %" PRIu64, sb->resync_offset);
  text_reshape (sb);
  if (x->have_log) {
    kv ("Write-hole Log", "%d record(s) to replay, %d torn, %d invalid",
        x->log_valid, x->log_torn, x->log_invalid);
    if (x->log_invalid)
      kv ("First Invalid", "%s", x->log_first);
  }
  text_members (sb);
}

static void
examine_text (const struct exam *x)
{
  printf ("%s:\n", x->spec);
  if (x->status == SBS_VALID)
    kv ("Superblock", "valid");
  else
    kv ("Superblock", "%s: %s", sb_status_names[x->status], x->why);
  if (x->note[0])
    kv ("Note", "%s", x->note);
  if (x->status == SBS_VALID)
    text_record (x);
  if (x->have_ring)
    text_ring (x);
}

/* ---- examine: JSON ---- */

static json_object *
jnum (uint64_t v)
{
  return v <= INT64_MAX ? json_object_new_int64 ((int64_t) v)
                        : json_object_new_uint64 (v);
}

static json_object *
juuid (const uint8_t uuid[RAID_UUID_LEN])
{
  char u[RAID_UUID_STRLEN];

  raid_uuid_format (uuid, u);
  return json_object_new_string (u);
}

static json_object *
jtime (uint64_t ns)
{
  char t[64];

  return json_object_new_string (fmt_time (ns, t, sizeof t));
}

static json_object *
json_geometry (uint32_t level, uint32_t layout, uint32_t chunk, uint32_t disks)
{
  json_object *o = json_object_new_object ();

  json_object_object_add (o, "level", jnum (level));
  json_object_object_add (o, "layout", json_object_new_string (layout_name (layout)));
  json_object_object_add (o, "chunk", jnum (chunk));
  json_object_object_add (o, "raid_devices", jnum (disks));
  return o;
}

static json_object *
json_reshape (const struct raid_sb *sb)
{
  json_object *o;

  if (sb->reshape_state == SB_RESHAPE_NONE)
    return NULL;
  o = json_object_new_object ();
  json_object_object_add (o, "state",
                          json_object_new_string (sb_reshape_state_name (sb->reshape_state)));
  json_object_object_add (o, "direction",
                          json_object_new_string (sb->reshape_direction == SB_DIR_BACKWARD
                                                  ? "backward" : "forward"));
  json_object_object_add (o, "position", jnum (sb->reshape_position));
  json_object_object_add (o, "to", json_geometry (sb->new_level, sb->new_layout,
                                                  sb->new_chunk,
                                                  sb->new_raid_devices));
  json_object_object_add (o, "new_array_size", jnum (sb->new_array_size));
  return o;
}

static json_object *
json_members (const struct raid_sb *sb)
{
  json_object *a = json_object_new_array ();

  for (uint32_t i = 0; i < sb->nmembers && i < SB_MAX_MEMBERS; i++) {
    const struct sb_member_entry *e = &sb->members[i];
    json_object *o = json_object_new_object ();

    json_object_object_add (o, "slot", jnum (i));
    json_object_object_add (o, "uuid", juuid (e->uuid));
    json_object_object_add (o, "role", e->role >= 0 ? jnum (e->role) : NULL);
    json_object_object_add (o, "state",
                            json_object_new_string (sb_member_state_name (e->state)));
    json_object_object_add (o, "data_offset", jnum (e->data_offset));
    json_object_object_add (o, "new_data_offset", jnum (e->new_data_offset));
    json_object_object_add (o, "recovery_offset", jnum (e->recovery_offset));
    json_object_object_add (o, "errors", jnum (e->errors));
    json_object_object_add (o, "this", json_object_new_boolean (
                              memcmp (e->uuid, sb->member_uuid, RAID_UUID_LEN) == 0));
    json_object_array_add (a, o);
  }
  return a;
}

static json_object *
json_ring (const struct exam *x)
{
  json_object *o = json_object_new_object ();
  json_object *h = json_object_new_array ();

  json_object_object_add (o, "slots", jnum (SB_RING_SLOTS));
  json_object_object_add (o, "valid", jnum (x->ring.nvalid));
  json_object_object_add (o, "corrupt", jnum (x->ring.ncorrupt));
  json_object_object_add (o, "empty", jnum (x->ring.nempty));
  json_object_object_add (o, "first_error", x->ring.ncorrupt > 0
                          ? json_object_new_string (x->ring.first_error) : NULL);
  for (int i = 0; i < x->ring.nvalid && i < HISTORY_MAX; i++) {
    json_object *r = json_object_new_object ();
    json_object_object_add (r, "events", jnum (x->ring.rec[i].events));
    json_object_object_add (r, "utime", jtime (x->ring.rec[i].utime_ns));
    json_object_object_add (r, "utime_ns", jnum (x->ring.rec[i].utime_ns));
    json_object_array_add (h, r);
  }
  json_object_object_add (o, "history", h);
  return o;
}

static void
json_record (json_object *o, const struct exam *x)
{
  const struct raid_sb *sb = x->sb;
  int dd = sb_data_disks (sb->level, sb->layout, sb->chunk, sb->raid_disks);
  bool role = x->self && x->self->role >= 0;

#define ADD(k, v) json_object_object_add (o, (k), (v))
  ADD ("version", jnum (sb->version));
  ADD ("feature_compat", jnum (sb->feature_compat));
  ADD ("feature_ro_compat", jnum (sb->feature_ro_compat));
  ADD ("feature_incompat", jnum (sb->feature_incompat));
  ADD ("array_uuid", juuid (sb->array_uuid));
  ADD ("member_uuid", juuid (sb->member_uuid));
  ADD ("role", role ? jnum (x->self->role) : NULL);
  ADD ("member_state", x->self
       ? json_object_new_string (sb_member_state_name (x->self->state)) : NULL);
  ADD ("events", jnum (sb->events));
  ADD ("ctime", jtime (sb->ctime_ns));
  ADD ("utime", jtime (sb->utime_ns));
  ADD ("level", jnum (sb->level));
  ADD ("layout", json_object_new_string (layout_name (sb->layout)));
  ADD ("chunk", jnum (sb->chunk));
  ADD ("raid_devices", jnum (sb->raid_disks));
  ADD ("data_disks", dd >= 0 ? jnum ((uint64_t) dd) : NULL);
  ADD ("data_offset", x->self ? jnum (x->self->data_offset) : NULL);
  ADD ("component_size", jnum (sb->component_size));
  ADD ("array_size", jnum (sb->array_size));
  ADD ("member_size", jnum (sb->member_size));
  ADD ("cons_offset", jnum (sb->cons_offset));
  ADD ("cons_size", jnum (sb->cons_size));
  ADD ("consistency", json_object_new_string (sb_consistency_name (sb->consistency)));
  ADD ("state", json_object_new_string (sb->flags & SB_FLAG_DIRTY ? "dirty" : "clean"));
  ADD ("flags", jnum (sb->flags));
  ADD ("resync_offset", sb->resync_offset == UINT64_MAX
       ? NULL : jnum (sb->resync_offset));
  ADD ("reshape", json_reshape (sb));
  if (x->have_log) {
    json_object *l = json_object_new_object ();
    json_object_object_add (l, "records", jnum (x->log_valid));
    json_object_object_add (l, "torn", jnum (x->log_torn));
    json_object_object_add (l, "invalid", jnum (x->log_invalid));
    json_object_object_add (l, "first_invalid", x->log_invalid
                            ? json_object_new_string (x->log_first) : NULL);
    ADD ("write_hole_log", l);
  }
  ADD ("members", json_members (sb));
#undef ADD
}

static json_object *
examine_json (const struct exam *x)
{
  json_object *o = json_object_new_object ();

  json_object_object_add (o, "spec", json_object_new_string (x->spec));
  json_object_object_add (o, "superblock",
                          json_object_new_string (sb_status_names[x->status]));
  json_object_object_add (o, "error", x->status == SBS_VALID
                          ? NULL : json_object_new_string (x->why));
  json_object_object_add (o, "note", x->note[0]
                          ? json_object_new_string (x->note) : NULL);
  if (x->status == SBS_VALID)
    json_record (o, x);
  json_object_object_add (o, "ring", x->have_ring ? json_ring (x) : NULL);
  return o;
}

static int
cmd_examine (const struct subcommand *sc, const char *control,
             int argc, char **argv)
{
  static const struct option opts[] = {
    { "json", no_argument, NULL, OPT_JSON },
    { "help", no_argument, NULL, 'h' },
    { NULL },
  };
  json_object *doc = NULL, *arr = NULL;
  struct exam *x;
  bool json = false;
  int c, r = 0;

  subcommand_getopt_reset (argv, sc->name);
  while ((c = getopt_long (argc, argv, "h", opts, NULL)) != -1) {
    if (c == 'h') {
      usage (stdout);
      return 0;
    }
    if (c != OPT_JSON)
      return bad_option ();
    json = true;
  }
  if (optind >= argc)
    return usage_error (sc, "no members given");

  x = malloc (sizeof *x);
  if (x == NULL) {
    error ("malloc: %m");
    return 1;
  }
  if (json) {
    doc = json_object_new_object ();
    arr = json_object_new_array ();
    json_object_object_add (doc, "members", arr);
  }
  for (int i = optind; i < argc; i++) {
    memset (x, 0, sizeof *x);
    x->spec = argv[i];
    examine_read (x);
    if (x->status != SBS_VALID) {
      error ("%s: %s", x->spec, x->why);
      r = 1;
    }
    if (json)
      json_object_array_add (arr, examine_json (x));
    else
      examine_text (x);
    if (!json && i + 1 < argc)
      putchar ('\n');
  }
  if (json) {
    printf ("%s\n", json_object_to_json_string_ext (doc, JSON_C_TO_STRING_PRETTY));
    json_object_put (doc);
  }
  free (x);
  return r;
}

/* ---- control-socket subcommands ---- */

/* Online subcommands: control-client.c. */
static int
cmd_control (const struct subcommand *sc, const char *control,
             int argc, char **argv)
{
  return control_main (argc, argv, control);
}

/* The offline subcommands; every other one is an op of the control
 * protocol, run by control-client.c. */
static const struct subcommand subcommands[] = {
  { "create", false, cmd_create },
  { "examine", false, cmd_examine },
};

static const struct subcommand *
find_subcommand (const char *name)
{
  static struct subcommand online = { NULL, true, cmd_control };

  for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
    if (strcmp (subcommands[i].name, name) == 0)
      return &subcommands[i];
  if (!control_is_subcommand (name))
    return NULL;
  online.name = name;
  return &online;
}

int
main (int argc, char **argv)
{
  static const struct option opts[] = {
    { "control", required_argument, NULL, 'C' },
    { "help", no_argument, NULL, 'h' },
    { NULL },
  };
  const struct subcommand *sc;
  const char *control = NULL;
  int c, r;

  raid_log_set_sink (log_to_stderr);
  while ((c = getopt_long (argc, argv, "+C:h", opts, NULL)) != -1) {
    switch (c) {
    case 'C': control = optarg; break;
    case 'h': usage (stdout); return 0;
    default: return bad_option ();
    }
  }
  if (optind >= argc) {
    usage (stderr);
    return EXIT_USAGE;
  }
  sc = find_subcommand (argv[optind]);
  if (sc == NULL) {
    error ("unknown subcommand '%s'", argv[optind]);
    usage (stderr);
    return EXIT_USAGE;
  }
  if (sc->online && control == NULL)
    control = getenv ("NBDRAID_CONTROL");
  if (sc->online && (control == NULL || *control == '\0')) {
    error ("%s: needs -C SOCKET (or NBDRAID_CONTROL)", sc->name);
    return EXIT_USAGE;
  }
  if (!sc->online && control != NULL) {
    error ("%s works on the members directly; -C is not used", sc->name);
    return EXIT_USAGE;
  }
  r = sc->run (sc, control, argc - optind, argv + optind);
  mio_shutdown ();
  if (fflush (stdout) == EOF || ferror (stdout)) {
    error ("write error on stdout: %m");
    r = 1;
  }
  return r;
}
