/* nbdraid: create, inspect and (through a running server's control socket)
 * manage nbdkit-raid arrays.
 *
 * Structure: main () finds the subcommand anywhere on the command line
 * (cli.h: options may come before or after it), moves it to the front and
 * runs it.  The subcommands that work offline on the members themselves
 * (create, examine) are here; the "online" ones, one per op of the control
 * protocol, are control-client.c's.  A mistyped subcommand gets a
 * suggestion.
 *
 * Exit status, for every subcommand: 0 success, 1 the operation failed or
 * was refused, 2 usage error; `status --test` and `wait` have their own
 * codes for scripts (cli.h).  Nothing but a subcommand's result goes to
 * stdout; with --json, errors too, as JSON objects.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
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
#include "protocol.h"
#include "sb.h"
#include "signature.h"
#include "util.h"

#define HISTORY_MAX 8           /* records shown by examine */

static void
log_to_stderr (enum raid_log_level lvl, const char *msg)
{
  if (lvl != RAID_LOG_DEBUG)
    fprintf (stderr, "nbdraid: %s\n", msg);
}

/* create and examine work on the members: -C has no use there. */
static int
offline_only (const struct subcommand *sc)
{
  if (cli.control == NULL)
    return 0;
  return cli_usage (sc, "%s works on the members directly; -C is not used",
                    sc->name);
}

/* ---- create ---- */

enum {
  OPT_LEVEL = 256, OPT_CHUNK, OPT_LAYOUT, OPT_SIZE, OPT_CONSISTENCY,
  OPT_DATA_OFFSET, OPT_ASSUME_CLEAN, OPT_SPARE, OPT_FORCE,
};

static const struct option create_options[] = {
  { "level", required_argument, NULL, OPT_LEVEL },
  { "chunk", required_argument, NULL, OPT_CHUNK },
  { "layout", required_argument, NULL, OPT_LAYOUT },
  { "size", required_argument, NULL, OPT_SIZE },
  { "consistency", required_argument, NULL, OPT_CONSISTENCY },
  { "data-offset", required_argument, NULL, OPT_DATA_OFFSET },
  { "assume-clean", no_argument, NULL, OPT_ASSUME_CLEAN },
  { "spare", required_argument, NULL, OPT_SPARE },
  { "force", no_argument, NULL, OPT_FORCE },
  { NULL },
};

/* Parse a SIZE option; returns 0, or EXIT_USAGE after a message. */
static int
parse_size_opt (const struct subcommand *sc, const char *opt,
                const char *s, uint64_t *v)
{
  if (raid_parse_size (s, v) == 0)
    return 0;
  return cli_usage (sc, "--%s: invalid size '%s'%s", opt, s,
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
      return cli_usage (sc, "--level: invalid level '%s'", arg);
    return 0;
  case OPT_CHUNK:
    if ((r = parse_size_opt (sc, "chunk", arg, &v)) != 0)
      return r;
    if (v == 0 || v > RAID_CHUNK_MAX) {
      cli_fail ("EINVAL", "chunk %" PRIu64 " is not a power of two between "
                "4K and 64M", v);
      return EXIT_FAIL;
    }
    o->chunk = (uint32_t) v;
    return 0;
  case OPT_LAYOUT:
    o->layout = raid_layout_parse (arg);
    if (o->layout == -1) {
      cli_fail ("EINVAL", "unknown layout '%s'", arg);
      return EXIT_FAIL;
    }
    return 0;
  case OPT_SIZE:
    if ((r = parse_size_opt (sc, "size", arg, &o->size)) != 0)
      return r;
    if (o->size == 0) {
      cli_fail ("EINVAL", "size 0 is too small for a member");
      return EXIT_FAIL;
    }
    return 0;
  case OPT_CONSISTENCY:
    o->consistency = sb_consistency_parse (arg);
    if (o->consistency == -1)
      return cli_usage (sc, "--consistency: expected journal, bitmap or "
                        "resync, not '%s'", arg);
    return 0;
  case OPT_DATA_OFFSET:
    if ((r = parse_size_opt (sc, "data-offset", arg, &o->data_offset)) != 0)
      return r;
    if (o->data_offset == 0) {
      cli_fail ("EINVAL", "data offset 0 is below the end of the metadata "
                "area (%u bytes: superblock journal and consistency area)",
                RAID_META_END);
      return EXIT_FAIL;
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

static void
print_uuid (const uint8_t uuid[RAID_UUID_LEN])
{
  char us[RAID_UUID_STRLEN];
  json_object *o;

  raid_uuid_format (uuid, us);
  if (!cli.json) {
    printf ("%s\n", us);
    return;
  }
  o = json_object_new_object ();
  json_object_object_add (o, "ok", json_object_new_boolean (1));
  json_object_object_add (o, "uuid", json_object_new_string (us));
  cli_result (o);
  json_object_put (o);
}

static int
cmd_create (const struct subcommand *sc, int argc, char **argv)
{
  struct raid_create_opts o = {
    .level = -1, .layout = -1, .probe = signature_probe,
  };
  const char **spares = calloc (argc, sizeof *spares);
  uint8_t uuid[RAID_UUID_LEN];
  char err[512];
  int c, r = 0;

  if (spares == NULL) {
    cli_fail ("ENOMEM", "out of memory");
    return EXIT_FAIL;
  }
  while (r == 0 && (c = cli_getopt (sc, argc, argv, &r)) != -1)
    if (c != CLI_STOP)
      r = create_option (sc, c, optarg, &o, spares);
    else if (r == 0)
      goto out;                 /* --help, --version */
  if (r == 0)
    r = offline_only (sc);
  if (r == 0 && o.level == -1)
    r = cli_usage (sc, "--level is required");
  if (r == 0 && optind >= argc)
    r = cli_usage (sc, "no members given");
  if (r == 0) {
    o.members = (const char *const *) &argv[optind];
    o.nmembers = argc - optind;
    o.spares = spares;
    if (raid_create (&o, uuid, err, sizeof err) == -1) {
      cli_fail_errno (errno, "%s", err);
      r = EXIT_FAIL;
    }
    else
      print_uuid (uuid);
  }
 out:
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
  int64_t marked[SB_MISSED_SLOTS];   /* regions each recording map marks on
                                        this member (-1: unreadable) */
  /* The write-hole log (policy journal): its records of the current epoch
   * as replay would judge them. */
  bool have_log;
  int log_valid, log_torn, log_invalid;
  char log_first[256];          /* the first invalid record, or "" */
};

/* Regions of a map of missed regions in rpr rows of the record's geometry. */
static uint64_t
missed_nregions (const struct raid_sb *sb, uint32_t rpr)
{
  uint64_t rows = sb->chunk ? sb->component_size / sb->chunk : 0;
  uint64_t n = rpr ? (rows + rpr - 1) / rpr : 0;
  return n < sb->missed_size / SB_MISSED_SLOTS * 8 ? n : sb->missed_size / SB_MISSED_SLOTS * 8;
}

/* Count the marked regions of each recording map, as this member holds it. */
static void
examine_maps (struct exam *x, struct member *m)
{
  const struct raid_sb *sb = x->sb;
  uint64_t len = sb->missed_size / SB_MISSED_SLOTS;
  uint8_t *buf = len ? malloc (len) : NULL;

  for (int i = 0; i < SB_MISSED_SLOTS; i++) {
    uint64_t n = missed_nregions (sb, sb->missed[i].rows_per_region);
    x->marked[i] = -1;
    if (sb->missed[i].state != SB_MISSED_RECORDING || !buf ||
        member_pread (m, buf, len, sb->missed_offset + i * len) != 0)
      continue;
    x->marked[i] = 0;
    for (uint64_t r = 0; r < n; r++)
      x->marked[i] += (buf[r / 8] >> (r % 8)) & 1;
  }
  free (buf);
}

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

  m = member_open (x->spec, MEMBER_PEEK, x->why, sizeof x->why);
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
    examine_maps (x, m);
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
    char role[16], repl[40] = "";

    if (e->role >= 0)
      snprintf (role, sizeof role, "%" PRId32, e->role);
    else
      snprintf (role, sizeof role, "-");
    if (e->replaces)
      snprintf (repl, sizeof repl, "  (replacing role %" PRIu32 ")", e->replaces - 1);
    raid_uuid_format (e->uuid, u);
    printf ("    %4" PRIu32 " %4s %-10s %-36s %12" PRIu64 " %15" PRIu64
            " %15" PRIu64 " %6" PRIu32 "  %s%s%s\n",
            i, role, sb_member_state_name (e->state), u, e->data_offset,
            e->new_data_offset, e->recovery_offset, e->errors,
            e->spec_hint[0] ? e->spec_hint : "-", repl, self ? "  <- this member" : "");
  }
}

/* The table entry (slot number) of member uuid, or -1. */
static int
entry_of (const struct raid_sb *sb, const uint8_t *uuid)
{
  for (uint32_t i = 0; i < sb->nmembers && i < SB_MAX_MEMBERS; i++)
    if (memcmp (sb->members[i].uuid, uuid, RAID_UUID_LEN) == 0)
      return (int) i;
  return -1;
}

static void
text_owner_maps (const struct exam *x)
{
  const struct raid_sb *sb = x->sb;
  char t[64], u[RAID_UUID_STRLEN], h[32];
  bool any = false;

  if (sb->owner_pid)
    kv ("Open By", "%s, pid %" PRIu32 ", since %s", sb->owner_host, sb->owner_pid,
        fmt_time (sb->owner_start_ns, t, sizeof t));
  else
    kv ("Open By", "nobody (stopped cleanly)");
  for (int i = 0; i < SB_MISSED_SLOTS; i++) {
    const struct sb_missed_slot *s = &sb->missed[i];
    int e = entry_of (sb, s->uuid);
    if (s->state != SB_MISSED_RECORDING)
      continue;
    raid_uuid_format (s->uuid, u);
    kv (any ? "" : "Missed Regions", "member %s (slot %d%s%s): %s of %" PRIu64
        " regions of %s marked, since event %" PRIu64 "%s", u, e,
        e >= 0 && sb->members[e].spec_hint[0] ? ", " : "",
        e >= 0 ? sb->members[e].spec_hint : "",
        x->marked[i] >= 0 ? (snprintf (t, sizeof t, "%" PRId64, x->marked[i]), t)
                          : "(unreadable)",
        missed_nregions (sb, s->rows_per_region),
        raid_fmt_size ((uint64_t) s->rows_per_region * sb->chunk, h, sizeof h), s->since,
        sb->missed_unreplayed & (1u << i) ? "; its own write-hole log not replayed" : "");
    any = true;
  }
  if (!any && sb->missed_size)
    kv ("Missed Regions", "no member is away");
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
  text_owner_maps (x);
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
    json_object_object_add (o, "replaces", e->replaces ? jnum (e->replaces - 1) : NULL);
    json_object_object_add (o, "spec_hint", e->spec_hint[0]
                            ? json_object_new_string (e->spec_hint) : NULL);
    json_object_object_add (o, "this", json_object_new_boolean (
                              memcmp (e->uuid, sb->member_uuid, RAID_UUID_LEN) == 0));
    json_object_array_add (a, o);
  }
  return a;
}

static json_object *
json_owner (const struct raid_sb *sb)
{
  json_object *o;

  if (!sb->owner_pid)
    return NULL;
  o = json_object_new_object ();
  json_object_object_add (o, "host", json_object_new_string (sb->owner_host));
  json_object_object_add (o, "pid", jnum (sb->owner_pid));
  json_object_object_add (o, "since", jtime (sb->owner_start_ns));
  return o;
}

/* The recording maps of missed regions (an empty list: none). */
static json_object *
json_maps (const struct exam *x)
{
  const struct raid_sb *sb = x->sb;
  json_object *a = json_object_new_array ();

  for (int i = 0; i < SB_MISSED_SLOTS; i++) {
    const struct sb_missed_slot *s = &sb->missed[i];
    json_object *o;
    int e = entry_of (sb, s->uuid);
    if (s->state != SB_MISSED_RECORDING)
      continue;
    o = json_object_new_object ();
    json_object_object_add (o, "member_uuid", juuid (s->uuid));
    json_object_object_add (o, "slot", e >= 0 ? jnum ((uint64_t) e) : NULL);
    json_object_object_add (o, "since_events", jnum (s->since));
    json_object_object_add (o, "region_bytes",
                            jnum ((uint64_t) s->rows_per_region * sb->chunk));
    json_object_object_add (o, "regions", jnum (missed_nregions (sb, s->rows_per_region)));
    json_object_object_add (o, "marked", x->marked[i] >= 0
                            ? jnum ((uint64_t) x->marked[i]) : NULL);
    json_object_object_add (o, "log_unreplayed",
                            json_object_new_boolean (sb->missed_unreplayed & (1u << i)));
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
  ADD ("owner", json_owner (sb));
  ADD ("missed", json_maps (x));
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

/* examine's result: {"ok": ..., "members": [...]}; when a member has no
 * valid superblock, "ok" is false and "error"/"message" name the first. */
static json_object *
examine_doc (void)
{
  json_object *doc = json_object_new_object ();

  json_object_object_add (doc, "ok", json_object_new_boolean (1));
  json_object_object_add (doc, "members", json_object_new_array ());
  return doc;
}

static void
examine_doc_error (json_object *doc, const struct exam *x)
{
  static const char *const codes[] = {
    [SBS_NONE] = "ENODATA", [SBS_CORRUPT] = "ENODATA",
    [SBS_UNSUPPORTED] = "EPROTONOSUPPORT", [SBS_UNREADABLE] = "EIO",
  };
  json_object *ok;
  char msg[PATH_MAX + 300];

  if (json_object_object_get_ex (doc, "ok", &ok) && !json_object_get_boolean (ok))
    return;
  snprintf (msg, sizeof msg, "%s: %s", x->spec, x->why);
  cli_result_error (doc, codes[x->status], msg);
}

static int
cmd_examine (const struct subcommand *sc, int argc, char **argv)
{
  json_object *doc = NULL;
  struct exam *x;
  int c, r = 0;

  while ((c = cli_getopt (sc, argc, argv, &r)) != -1)
    if (c == CLI_STOP)
      return r;
  if ((r = offline_only (sc)) != 0)
    return r;
  if (optind >= argc)
    return cli_usage (sc, "no members given");

  x = malloc (sizeof *x);
  if (x == NULL) {
    cli_fail ("ENOMEM", "out of memory");
    return EXIT_FAIL;
  }
  if (cli.json)
    doc = examine_doc ();
  for (int i = optind; i < argc; i++) {
    memset (x, 0, sizeof *x);
    x->spec = argv[i];
    examine_read (x);
    if (x->status != SBS_VALID) {
      if (cli.json)
        examine_doc_error (doc, x);
      else
        cli_fail ("ENODATA", "%s: %s", x->spec, x->why);
      r = EXIT_FAIL;
    }
    if (cli.json)
      json_object_array_add (json_object_object_get (doc, "members"),
                             examine_json (x));
    else
      examine_text (x);
    if (!cli.json && i + 1 < argc)
      putchar ('\n');
  }
  if (cli.json) {
    cli_result (doc);
    json_object_put (doc);
  }
  free (x);
  return r;
}

/* ---- the subcommands ---- */

static const struct subcommand create_sc = {
  "create", false,
  "create --level=LEVEL [--chunk=SIZE] [--layout=NAME] [--size=SIZE]\n"
  "                 [--consistency=journal|bitmap|resync] [--data-offset=SIZE]\n"
  "                 [--assume-clean] [--spare=MEMBER]... [--force] MEMBER...",
  "Write a new array's superblock journal to every MEMBER (roles in the\n"
  "order given) and print the array's UUID.  Nothing is written unless every\n"
  "check passes.  A member that belongs to an array, or holds a filesystem,\n"
  "a partition table or a RAID/LVM signature, is refused unless --force.\n"
  "\n"
  "Options:\n"
  "  --level=LEVEL       0, 1, 4, 5 or 6 (required)\n"
  "  --chunk=SIZE        a power of two from 4K to 64M (default 64K)\n"
  "  --layout=NAME       md's layout names (default left-symmetric)\n"
  "  --size=SIZE         the size of every member; missing files are created\n"
  "  --consistency=POLICY  journal (default), bitmap or resync\n"
  "  --data-offset=SIZE  where data starts on each member (default 16M)\n"
  "  --assume-clean      record the array as in sync\n"
  "  --spare=MEMBER      add a spare (repeatable)\n"
  "  --force             overwrite a member of another array or one holding\n"
  "                      a filesystem, partition table or RAID/LVM signature\n",
  create_options, cmd_create,
};

static const struct subcommand examine_sc = {
  "examine", false, "examine [--json] MEMBER...",
  "Decode the superblock journal of each MEMBER (read-only): the newest\n"
  "record, the member table and the recent history.  Exits 1 when a member\n"
  "has no valid superblock.\n",
  NULL, cmd_examine,
};

/* Every subcommand, in the order --help lists them. */
static const struct subcommand *subcommands[2 + PROTO_NOPS];
static size_t nsubcommands;

static void
subcommands_init (void)
{
  subcommands[nsubcommands++] = &create_sc;
  subcommands[nsubcommands++] = &examine_sc;
  for (size_t i = 0; i < control_nsubcommands; i++)
    subcommands[nsubcommands++] = &control_subcommands[i];
  cli_set_subcommands (subcommands, nsubcommands);
}

static const struct subcommand *
find_subcommand (const char *name)
{
  for (size_t i = 0; i < nsubcommands; i++)
    if (strcmp (subcommands[i]->name, name) == 0)
      return subcommands[i];
  return NULL;
}

/* Whether an option called name (len bytes, after "--") of any subcommand
 * takes an argument: then the next word is its argument, not a
 * subcommand. */
static bool
any_option_takes_arg (const char *name, size_t len)
{
  if (cli_option_takes_arg (NULL, name, len))
    return true;
  for (size_t i = 0; i < nsubcommands; i++)
    if (cli_option_takes_arg (subcommands[i], name, len))
      return true;
  return false;
}

/* The index of the subcommand in argv: the first word that is neither an
 * option nor an option's argument (after "--": the next word); 0 if none. */
static int
subcommand_index (int argc, char **argv)
{
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];

    if (strcmp (a, "--") == 0)
      return i + 1 < argc ? i + 1 : 0;
    if (strncmp (a, "--", 2) == 0) {
      if (strchr (a, '=') == NULL && any_option_takes_arg (a + 2, strlen (a + 2)))
        i++;
    }
    else if (a[0] == '-' && a[1] != '\0') {
      if (strcmp (a, "-C") == 0)        /* -C SOCKET; -CSOCKET is one word */
        i++;
    }
    else
      return i;
  }
  return 0;
}

/* Damerau-Levenshtein distance (optimal string alignment), short words. */
static int
distance (const char *a, const char *b)
{
  int la = strlen (a), lb = strlen (b), d[32][32];

  if (la > 30 || lb > 30)
    return 99;
  for (int i = 0; i <= la; i++)
    d[i][0] = i;
  for (int j = 0; j <= lb; j++)
    d[0][j] = j;
  for (int i = 1; i <= la; i++)
    for (int j = 1; j <= lb; j++) {
      int cost = a[i - 1] != b[j - 1];
      int v = d[i - 1][j] + 1;

      if (d[i][j - 1] + 1 < v)
        v = d[i][j - 1] + 1;
      if (d[i - 1][j - 1] + cost < v)
        v = d[i - 1][j - 1] + cost;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          d[i - 2][j - 2] + 1 < v)
        v = d[i - 2][j - 2] + 1;
      d[i][j] = v;
    }
  return d[la][lb];
}

/* The subcommand name most likely meant: the only one it abbreviates, or
 * the nearest within two edits; NULL if none is near. */
static const char *
suggest (const char *name)
{
  const char *best = NULL, *prefix = NULL;
  int best_d = 3, nprefix = 0;

  for (size_t i = 0; i < nsubcommands; i++) {
    const char *n = subcommands[i]->name;
    int d = distance (name, n);

    if (*name && strncmp (n, name, strlen (name)) == 0) {
      prefix = n;
      nprefix++;
    }
    if (d < best_d || (d == best_d && best == NULL)) {
      best = d < 3 ? n : NULL;
      best_d = d;
    }
  }
  if (nprefix == 1)
    return prefix;
  return best && best_d < (int) strlen (name) ? best : NULL;
}

static int
unknown_subcommand (const char *name)
{
  const char *s = suggest (name);

  if (s)
    return cli_usage (NULL, "unknown subcommand '%s'; did you mean '%s'?",
                      name, s);
  return cli_usage (NULL, "unknown subcommand '%s'", name);
}

/* No subcommand: only the common options (--help, --version). */
static int
no_subcommand (int argc, char **argv)
{
  int c, r = 0;

  optind = 0;
  while ((c = cli_getopt (NULL, argc, argv, &r)) != -1)
    if (c == CLI_STOP)
      return r;
  if (optind < argc)
    return unknown_subcommand (argv[optind]);
  if (!cli.json)
    cli_help (stderr, NULL);
  return cli_usage (NULL, "no subcommand given");
}

/* --json anywhere before "--" (also as an option's value: harmless). */
static bool
json_anywhere (int argc, char **argv)
{
  for (int i = 1; i < argc && strcmp (argv[i], "--") != 0; i++)
    if (strcmp (argv[i], "--json") == 0)
      return true;
  return false;
}

int
main (int argc, char **argv)
{
  const struct subcommand *sc;
  char **args = NULL;
  int k, r;

  raid_log_set_sink (log_to_stderr);
  subcommands_init ();
  cli.json = json_anywhere (argc, argv);
  k = subcommand_index (argc, argv);
  if (k == 0)
    r = no_subcommand (argc, argv);
  else if ((sc = find_subcommand (argv[k])) == NULL)
    r = unknown_subcommand (argv[k]);
  else if ((args = calloc (argc + 1, sizeof *args)) == NULL) {
    cli_fail ("ENOMEM", "out of memory");
    r = EXIT_FAIL;
  }
  else {
    /* The subcommand first, then every other word in its order. */
    int n = 0;

    args[n++] = argv[k];
    for (int i = 1; i < argc; i++)
      if (i != k && !(i == k - 1 && strcmp (argv[i], "--") == 0))
        args[n++] = argv[i];
    optind = 0;
    r = sc->run (sc, n, args);
  }
  free (args);
  mio_shutdown ();
  if (fflush (stdout) == EOF || ferror (stdout)) {
    fprintf (stderr, "nbdraid: write error on stdout: %m\n");
    r = EXIT_FAIL;
  }
  return cli_finish (r);
}
