/* nbdkit-raid: encoding struct raid_status as JSON (see status-json.h).
 *
 * Invariant: every key listed in status-json.h is present in the output,
 * with a JSON null only where the contract says "or null"; an allocation
 * failure is reported (-1), never turned into a silent null.  The encoder
 * reads only its argument: it takes no lock and may run in any thread.
 */
#include <stdint.h>
#include <stdio.h>

#include "array.h"
#include "protocol.h"
#include "status-json.h"

/* Add v under k; v == NULL here means json-c failed to allocate it. */
static int
put (json_object *o, const char *k, json_object *v)
{
  return proto_json_add (o, k, v);
}

/* An intended JSON null. */
static int
put_null (json_object *o, const char *k)
{
  return json_object_object_add (o, k, NULL) == 0 ? 0 : -1;
}

static json_object *
jint (uint64_t v)
{
  return proto_json_uint (v);
}

static json_object *
jstr (const char *s)
{
  return json_object_new_string (s ? s : "unknown");
}

static const char *
layout_name (int layout)
{
  return raid_layout_name (layout);     /* jstr maps NULL to "unknown" */
}

static json_object *
geom_json (const struct raid_geom_status *g)
{
  json_object *o = json_object_new_object ();

  if (o == NULL)
    return NULL;
  if (put (o, "level", jint ((uint64_t) g->level)) ||
      put (o, "layout", jstr (layout_name (g->layout))) ||
      put (o, "chunk", jint (g->chunk)) ||
      put (o, "raid_devices", jint ((uint64_t) g->raid_disks))) {
    json_object_put (o);
    return NULL;
  }
  return o;
}

static json_object *
member_json (const struct raid_member_status *m)
{
  json_object *o = json_object_new_object ();
  int r;

  if (o == NULL)
    return NULL;
  r = m->role >= 0 ? put (o, "role", jint ((uint64_t) m->role))
                   : put_null (o, "role");
  r = r || (m->spec[0] ? put (o, "spec", jstr (m->spec)) : put_null (o, "spec"));
  if (r ||
      put (o, "state", jstr (raid_member_state_name (m->state))) ||
      put (o, "errors", jint (m->errors)) ||
      put (o, "data_offset", jint (m->data_offset)) ||
      put (o, "down", json_object_new_boolean (m->down)) ||
      (m->away_seconds >= 0 ? put (o, "away_seconds", jint ((uint64_t) m->away_seconds))
                            : put_null (o, "away_seconds")) ||
      (m->missed_regions >= 0
       ? put (o, "missed_regions", jint ((uint64_t) m->missed_regions)) ||
         put (o, "missed_region_bytes", jint (m->region_bytes))
       : put_null (o, "missed_regions"))) {
    json_object_put (o);
    return NULL;
  }
  return o;
}

static json_object *
members_json (const struct raid_status *st)
{
  json_object *a = json_object_new_array ();
  const int max = (int) (sizeof st->members / sizeof st->members[0]);
  int n = st->nmembers < 0 ? 0 : st->nmembers > max ? max : st->nmembers;

  if (a == NULL)
    return NULL;
  for (int i = 0; i < n; i++) {
    json_object *m = member_json (&st->members[i]);
    if (m == NULL || json_object_array_add (a, m) != 0) {
      json_object_put (m);
      json_object_put (a);
      return NULL;
    }
  }
  return a;
}

static json_object *
reshape_json (const struct raid_status *st)
{
  json_object *o = json_object_new_object ();

  if (o == NULL)
    return NULL;
  if (put (o, "state", jstr (st->reshape.running ? "running" : "frozen")) ||
      put (o, "position", jint (st->reshape.position)) ||
      put (o, "total", jint (st->reshape.total)) ||
      put (o, "boundary", jint (st->reshape.boundary)) ||
      put (o, "direction", jstr (st->reshape.direction == SB_DIR_BACKWARD
                                 ? "backward" : "forward")) ||
      put (o, "from", geom_json (&st->reshape.from)) ||
      put (o, "to", geom_json (&st->reshape.to)) ||
      (st->reshape.error[0] ? put (o, "error", jstr (st->reshape.error))
       : put_null (o, "error"))) {
    json_object_put (o);
    return NULL;
  }
  return o;
}

static json_object *
progress_json (const struct raid_status *st)
{
  json_object *o = json_object_new_object ();
  int r;

  if (o == NULL)
    return NULL;
  r = put (o, "action", jstr (raid_sync_action_name (st->progress.action))) ||
    put (o, "done", jint (st->progress.done)) ||
    put (o, "total", jint (st->progress.total)) ||
    put (o, "rate", jint (st->progress.rate));
  r = r || (st->progress.eta_seconds >= 0
            ? put (o, "eta_seconds", jint ((uint64_t) st->progress.eta_seconds))
            : put_null (o, "eta_seconds"));
  r = r || (st->progress.error[0] ? put (o, "error", jstr (st->progress.error))
            : put_null (o, "error"));
  if (r) {
    json_object_put (o);
    return NULL;
  }
  return o;
}

int
raid_status_json_fill (json_object *obj, const struct raid_status *st)
{
  char uuid[RAID_UUID_STRLEN];

  raid_uuid_format (st->uuid, uuid);
  if (put (obj, "uuid", jstr (uuid)) ||
      put (obj, "level", jint ((uint64_t) st->geom.level)) ||
      put (obj, "layout", jstr (layout_name (st->geom.layout))) ||
      put (obj, "chunk", jint (st->geom.chunk)) ||
      put (obj, "raid_devices", jint ((uint64_t) st->geom.raid_disks)) ||
      put (obj, "data_disks", jint ((uint64_t) st->data_disks)) ||
      put (obj, "size", jint (st->size)) ||
      put (obj, "health", jstr (raid_health_name (st->health))) ||
      put (obj, "sync_action", jstr (raid_sync_action_name (st->sync_action))) ||
      put (obj, "members", members_json (st)))
    return -1;
  if ((st->has_reshape ? put (obj, "reshape", reshape_json (st))
                       : put_null (obj, "reshape")) ||
      (st->has_progress ? put (obj, "progress", progress_json (st))
                        : put_null (obj, "progress")))
    return -1;
  if (put (obj, "mismatch_count", jint (st->mismatch_count)) ||
      (st->resync_owed == UINT64_MAX ? put_null (obj, "resync_owed")
       : put (obj, "resync_owed", jint (st->resync_owed))) ||
      put (obj, "events", jint (st->events)) ||
      put (obj, "consistency", jstr (sb_consistency_name ((uint32_t) st->consistency))) ||
      put (obj, "speed_min", jint (st->speed_min)) ||
      put (obj, "speed_max", jint (st->speed_max)))
    return -1;
  return 0;
}

json_object *
raid_status_json (const struct raid_status *st)
{
  json_object *o = json_object_new_object ();

  if (o != NULL && raid_status_json_fill (o, st) == -1) {
    json_object_put (o);
    return NULL;
  }
  return o;
}
