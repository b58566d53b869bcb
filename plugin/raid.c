/* nbdkit-raid: the nbdkit plugin.
 *
 * Glue only: parameters are parsed and checked in config/config_complete,
 * the members are opened and the array assembled in get_ready (the last
 * place whose errors the user sees), background threads start in
 * after_fork, and every data callback is one call into raidcore.  The array
 * is global; connections carry no state of their own.
 */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "array.h"
#include "control.h"
#include "job.h"                 /* SYNC_SPEED_MIN_DEFAULT */
#include "member.h"
#include "sb.h"
#include "util.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* -D raid.verbose=1: log raidcore's informational messages. */
NBDKIT_DLL_PUBLIC int raid_debug_verbose = 0;

static char *member_specs[SB_MAX_MEMBERS];
static int nmember_specs;
static char *control_path;
static bool force;
static bool served_readonly;             /* nbdkit -r: see server_readonly */
static bool reshape_autostart = true;
static bool write_gather = true;         /* see raid_assemble_opts */
static int64_t speed_min = -1, speed_max = -1;   /* -1: raidcore's default */
static unsigned member_timeout = 30;     /* seconds; see raid_assemble_opts */
static struct raid_array *array;
static char export_description[128];   /* names the array: see identity.h */

static void
raid_log_to_nbdkit (enum raid_log_level lvl, const char *msg)
{
  switch (lvl) {
  case RAID_LOG_ERROR:
  case RAID_LOG_WARN:
    nbdkit_error ("%s", msg);
    break;
  case RAID_LOG_INFO:
  case RAID_LOG_DEBUG:
    if (raid_debug_verbose || lvl == RAID_LOG_INFO)
      nbdkit_debug ("%s", msg);
    break;
  }
}

static bool
is_uri (const char *s)
{
  return strncmp (s, "nbd://", 6) == 0 || strncmp (s, "nbds://", 7) == 0 ||
    strncmp (s, "nbd+unix://", 11) == 0 || strncmp (s, "nbds+unix://", 12) == 0;
}

/* Called once at load: route raidcore's log to nbdkit. */
static void
raid_load (void)
{
  raid_log_set_sink (raid_log_to_nbdkit);
}

/* Called at unload: free configuration and stop shared I/O threads. */
static void
raid_unload (void)
{
  for (int i = 0; i < nmember_specs; i++)
    free (member_specs[i]);
  free (control_path);
  mio_shutdown ();
}

/* One key=value from the command line. */
/* A parameter nbdkit's parser refused (its message came first, without
 * the parameter's name): name it.  Returns -1. */
static int
bad_value (const char *key, const char *value)
{
  nbdkit_error ("%s=%s: not a valid value for %s (see nbdkit-raid-plugin(1))",
                key, value, key);
  return -1;
}

static int
raid_config (const char *key, const char *value)
{
  if (strcmp (key, "member") == 0) {
    char *spec;
    if (nmember_specs == SB_MAX_MEMBERS) {
      nbdkit_error ("too many members (at most %d)", SB_MAX_MEMBERS);
      return -1;
    }
    /* Paths are made absolute: the server changes directory to /. */
    spec = is_uri (value) ? strdup (value) : nbdkit_realpath (value);
    if (spec == NULL) {
      if (is_uri (value))
        nbdkit_error ("strdup: %m");
      return -1;
    }
    member_specs[nmember_specs++] = spec;
  }
  else if (strcmp (key, "control") == 0) {
    /* The socket does not exist yet: nbdkit_realpath would fail. */
    free (control_path);
    control_path = NULL;
    if (*value == '\0') {
      nbdkit_error ("control: an empty path (give control=PATH of the socket)");
      return -1;
    }
    if ((control_path = nbdkit_absolute_path (value)) == NULL)
      return bad_value (key, value);
  }
  else if (strcmp (key, "force") == 0 || strcmp (key, "reshape-autostart") == 0 ||
           strcmp (key, "write-gather") == 0) {
    int r = nbdkit_parse_bool (value);
    if (r == -1)
      return bad_value (key, value);
    if (key[0] == 'f')
      force = r;
    else if (key[0] == 'r')
      reshape_autostart = r;
    else
      write_gather = r;
  }
  else if (strcmp (key, "member-timeout") == 0) {
    if (nbdkit_parse_unsigned ("member-timeout", value, &member_timeout) == -1)
      return bad_value (key, value);
    if (member_timeout > 86400) {
      nbdkit_error ("member-timeout: %u seconds is more than a day", member_timeout);
      return -1;
    }
  }
  else if (strcmp (key, "speed-min") == 0 || strcmp (key, "speed-max") == 0) {
    int64_t v = nbdkit_parse_size (value);
    if (v == -1)
      return bad_value (key, value);
    if (strcmp (key, "speed-min") == 0)
      speed_min = v;
    else
      speed_max = v;
  }
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

/* Refuse a member named twice: the same URI, or paths (already made
 * real, so links and spellings are resolved) of one file or device. */
static int
check_named_once (void)
{
  struct stat st[SB_MAX_MEMBERS];
  bool have[SB_MAX_MEMBERS];

  for (int i = 0; i < nmember_specs; i++) {
    have[i] = !is_uri (member_specs[i]) && stat (member_specs[i], &st[i]) == 0;
    for (int j = 0; j < i; j++) {
      bool same = strcmp (member_specs[i], member_specs[j]) == 0 ||
        (have[i] && have[j] && st[i].st_dev == st[j].st_dev && st[i].st_ino == st[j].st_ino) ||
        (have[i] && have[j] && S_ISBLK (st[i].st_mode) && st[i].st_rdev == st[j].st_rdev);
      if (same && strcmp (member_specs[i], member_specs[j]) == 0)
        nbdkit_error ("member %s is named twice", member_specs[i]);
      else if (same)
        nbdkit_error ("member %s is named twice (as %s and %s)", member_specs[i],
                      member_specs[j], member_specs[i]);
      if (same)
        return -1;
    }
  }
  return 0;
}

/* Check the configuration before anything is served. */
static int
raid_config_complete (void)
{
  if (nmember_specs == 0) {
    nbdkit_error ("no members given: use member=PATH|URI (one per member)");
    return -1;
  }
  if (speed_min >= 0 && speed_max > 0 && speed_min > speed_max) {
    nbdkit_error ("speed-min is above speed-max");
    return -1;
  }
  return check_named_once ();
}

/* Every parameter with its default: nbdkit raid --help prints this, and
 * raid_dump_plugin prints the same defaults as raid_param_NAME=DEFAULT
 * lines (tests/test-release.sh checks that the two, and the man page's
 * PARAMETERS, name the same parameters). */
#define raid_config_help \
  "[member=]PATH|URI ...     Members of the array: files, block devices,\n" \
  "                          NBD URIs; spares too, in any order (required).\n" \
  "control=SOCKET            Serve the control protocol on this UNIX socket\n" \
  "                          (default: none).\n" \
  "reshape-autostart=BOOL    Resume a reshape that was running when the\n" \
  "                          server stopped (default true).\n" \
  "speed-min=SIZE            Background work rate kept under client load,\n" \
  "                          bytes/s (default 16M).\n" \
  "speed-max=SIZE            Background work rate limit, bytes/s\n" \
  "                          (default 0: no limit).\n" \
  "member-timeout=SECONDS    How long an NBD member may be away before it is\n" \
  "                          faulty; bounds every NBD operation (default 30).\n" \
  "force=BOOL                Start dirty and degraded without a journal, as\n" \
  "                          served by another host, or taking back stale\n" \
  "                          members as they are (default false).\n" \
  "write-gather=BOOL         Hold partial-row writes briefly (20-200 ms) to\n" \
  "                          join them into whole rows; durable after a flush,\n" \
  "                          as always (default true)."

_Static_assert (SYNC_SPEED_MIN_DEFAULT == 16u << 20 && SYNC_SPEED_MAX_DEFAULT == 0,
                "a speed default changed: update raid_config_help and raid_params");

static const struct { const char *name, *dflt; } raid_params[] = {
  { "member", "required" },
  { "control", "none" },
  { "reshape-autostart", "true" },
  { "speed-min", "16777216" },
  { "speed-max", "0" },
  { "member-timeout", "30" },
  { "force", "false" },
  { "write-gather", "true" },
};

/* nbdkit raid --dump-plugin: after nbdkit's own lines (version= is this
 * plugin's version), the version again under the plugin's own key and
 * every parameter's default. */
static void
raid_dump_plugin (void)
{
  printf ("raid_version=%s\n", PACKAGE_VERSION);
  printf ("raid_max_members=%d\n", SB_MAX_MEMBERS);
  for (size_t i = 0; i < sizeof raid_params / sizeof raid_params[0]; i++)
    printf ("raid_param_%s=%s\n", raid_params[i].name, raid_params[i].dflt);
}

/* Whether nbdkit was started read-only (-r, --readonly): nbdkit does not
 * tell a plugin before clients connect, so read its command line, up to
 * the plugin's own name.  A cluster of short options counts when its r
 * comes before a letter that takes a value. */
static bool
server_readonly (void)
{
  static char buf[65536];
  FILE *fp = fopen ("/proc/self/cmdline", "re");
  size_t n = fp ? fread (buf, 1, sizeof buf - 1, fp) : 0;
  bool ro = false;

  if (fp)
    fclose (fp);
  buf[n] = '\0';
  for (char *a = buf + strlen (buf) + 1; a < buf + n; a += strlen (a) + 1) {
    if (strcmp (a, "raid") == 0 || strstr (a, "nbdkit-raid-plugin"))
      break;                                 /* the plugin: its own params follow */
    if (strcmp (a, "--readonly") == 0 || strcmp (a, "--read-only") == 0)
      ro = true;
    else if (a[0] == '-' && a[1] != '-')
      for (const char *c = a + 1; *c && !strchr ("DegiPptUu", *c); c++)
        ro |= *c == 'r';
  }
  return ro;
}

/* Open the members and assemble the array. */
static int
raid_get_ready (void)
{
  struct member *ms[SB_MAX_MEMBERS];
  struct raid_assemble_opts o = { .force = force, .no_autostart = !reshape_autostart,
                                  .readonly = server_readonly (),
                                  .member_timeout = member_timeout,
                                  .gather = write_gather };
  const char *pending[SB_MAX_MEMBERS];
  char err[512];
  int n = 0, npending = 0;

  served_readonly = o.readonly;
  /* First, before any member is touched: a server already listening on
   * the control path is most likely serving this very array, and assembly
   * may write to the members (it records lost roles). */
  if (control_path && control_bind (control_path, err, sizeof err) < 0) {
    nbdkit_error ("control=%s: %s", control_path, err);
    return -1;
  }
  /* Every NBD operation, connecting included, is bounded by the member
   * timeout (0: the default bound). */
  member_set_io_timeout (member_timeout ? member_timeout : 30);
  for (int i = 0; i < nmember_specs; i++) {
    int e;
    enum member_access how = served_readonly ? MEMBER_READ_SHARED : MEMBER_READ_WRITE;
    if ((ms[n] = member_open (member_specs[i], how, err, sizeof err))) {
      n++;
      continue;
    }
    e = errno;
    if (e == EBUSY)
      sb_name_holder (member_specs[i], err, sizeof err);
    if (is_uri (member_specs[i]) && member_timeout && !served_readonly &&
        e != EINVAL && e != EROFS && e != ENOTSUP) {
      /* Not reachable now: a missing member, tried again while serving. */
      nbdkit_error ("%s (the array starts without it and keeps trying)", err);
      pending[npending++] = member_specs[i];
      continue;
    }
    nbdkit_error ("%s", err);
    for (int j = 0; j < n; j++)
      member_close (ms[j]);
    control_stop ();
    return -1;
  }
  if (raid_array_assemble (ms, n, &o, &array, err, sizeof err) < 0) {
    nbdkit_error ("%s", err);
    control_stop ();
    return -1;
  }
  raid_array_export_description (array, export_description,
                                 sizeof export_description);
  for (int i = 0; i < npending; i++)
    if (raid_array_add_pending (array, pending[i]) != 0) {
      nbdkit_error ("out of memory");
      control_stop ();
      return -1;
    }
  if ((speed_min >= 0 || speed_max >= 0) && !served_readonly) {
    uint64_t mn = speed_min, mx = speed_max;
    if (raid_array_set_speed (array, speed_min >= 0 ? &mn : NULL,
                              speed_max >= 0 ? &mx : NULL, err, sizeof err) != 0) {
      nbdkit_error ("%s", err);
      control_stop ();
      return -1;
    }
  }
  return 0;
}

/* Threads do not survive the daemonizing fork: start them here. */
static int
raid_after_fork (void)
{
  if (raid_array_start (array) < 0) {
    nbdkit_error ("cannot start member I/O threads");
    return -1;
  }
  if (control_start_thread (array) < 0) {
    nbdkit_error ("cannot start the control socket threads");
    return -1;
  }
  return 0;
}

/* Flush and close the array at shutdown. */
static void
raid_cleanup (void)
{
  control_stop ();                 /* no request may use the array after this */
  raid_array_close (array);
  array = NULL;
}

/* Connections share the array; the handle is just non-NULL. */
static void *
raid_open (int readonly)
{
  return array;
}

/* The description names the array, so that this server (or another)
 * recognises its export when it is offered as a member (identity.h). */
static const char *
raid_export_description (void *handle)
{
  return export_description;
}

static int64_t
raid_get_size (void *handle)
{
  return raid_array_size (array);
}

/* Preferred: the full stripe width, or its largest power-of-two divisor. */
static int
raid_block_size (void *handle, uint32_t *minimum, uint32_t *preferred,
                 uint32_t *maximum)
{
  uint64_t w = raid_array_stripe_width (array);
  uint64_t p = w & -w;

  *minimum = 1;
  *preferred = raid_max_u64 (512, raid_min_u64 (p, 32u << 20));
  *maximum = 64u << 20;
  return 0;
}

/* A read-only server (nbdkit -r) writes nothing to any member. */
static int raid_can_write (void *handle) { return !served_readonly; }
static int raid_can_extents (void *handle) { return 1; }
static int raid_can_flush (void *handle) { return 1; }
static int raid_can_trim (void *handle) { return 1; }
static int raid_can_zero (void *handle) { return 1; }
static int raid_can_fast_zero (void *handle) { return 1; }
static int raid_can_multi_conn (void *handle) { return 1; }
static int raid_can_fua (void *handle) { return NBDKIT_FUA_NATIVE; }

static int
fail (const char *op, uint64_t count, uint64_t off, int err)
{
  if (err != ENOTSUP)
    nbdkit_error ("%s: %" PRIu64 " bytes at offset %" PRIu64 ": %s",
                  op, count, off, raid_strerror (err));
  nbdkit_set_error (err);
  return -1;
}

static int
raid_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
            uint32_t flags)
{
  int err = raid_array_pread (array, buf, count, offset);
  return err ? fail ("pread", count, offset, err) : 0;
}

static unsigned
io_flags (uint32_t flags)
{
  return (flags & NBDKIT_FLAG_FUA) ? RAID_IO_FUA : 0;
}

static int
raid_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  int err = raid_array_pwrite (array, buf, count, offset, io_flags (flags));
  return err ? fail ("pwrite", count, offset, err) : 0;
}

/* Flush covers every member (data, parity and superblocks). */
static int
raid_flush (void *handle, uint32_t flags)
{
  int err = raid_array_flush (array);
  return err ? fail ("flush", 0, 0, err) : 0;
}

/* Trimmed ranges read back as zeroes: trim is zeroing that may punch. */
static int
raid_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  int err = raid_array_zero (array, count, offset, io_flags (flags), false);
  return err ? fail ("trim", count, offset, err) : 0;
}

static int
raid_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  int err = raid_array_zero (array, count, offset, io_flags (flags),
                             flags & NBDKIT_FLAG_FAST_ZERO);
  return err ? fail ("zero", count, offset, err) : 0;
}

static int
add_extent (void *opaque, uint64_t off, uint64_t len, bool zero)
{
  return nbdkit_add_extent (opaque, off, len,
                            zero ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0);
}

/* Zero extents are rows every member in use holds as a hole. */
static int
raid_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
              struct nbdkit_extents *extents)
{
  int err = raid_array_extents (array, count, offset, add_extent, extents);
  return err ? fail ("extents", count, offset, err > 0 ? err : EIO) : 0;
}

static struct nbdkit_plugin plugin = {
  .name              = "raid",
  .longname          = "nbdkit software RAID 4/5/6 plugin",
  .version           = PACKAGE_VERSION,
  .load              = raid_load,
  .unload            = raid_unload,
  .config            = raid_config,
  .config_complete   = raid_config_complete,
  .config_help       = raid_config_help,
  .dump_plugin       = raid_dump_plugin,
  .magic_config_key  = "member",
  .get_ready         = raid_get_ready,
  .after_fork        = raid_after_fork,
  .cleanup           = raid_cleanup,
  .open              = raid_open,
  .get_size          = raid_get_size,
  .export_description = raid_export_description,
  .block_size        = raid_block_size,
  .can_write         = raid_can_write,
  .can_flush         = raid_can_flush,
  .can_trim          = raid_can_trim,
  .can_zero          = raid_can_zero,
  .can_fast_zero     = raid_can_fast_zero,
  .can_multi_conn    = raid_can_multi_conn,
  .can_fua           = raid_can_fua,
  .can_extents       = raid_can_extents,
  .extents           = raid_extents,
  .pread             = raid_pread,
  .pwrite            = raid_pwrite,
  .flush             = raid_flush,
  .trim              = raid_trim,
  .zero              = raid_zero,
  .errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN (plugin)
