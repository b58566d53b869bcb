/* nbdkit-raid: the JSON form of an array's status (struct raid_status).
 *
 * Part of the protocol library (protocol.h): raidcore knows nothing of
 * JSON; it fills struct raid_status (array.h), and this encoder, read only
 * through array.h, turns it into the reply fields.  The control-socket
 * server (plugin/control.c) puts them at the top level of its `status`,
 * `wait` and `reshape` replies.  The field names, types and spellings are
 * a contract with clients, documented in nbdkit-raid-control(7), STATUS
 * FIELDS; nbdraid reads them back by name.
 *
 * Fields added, in this order:
 *   uuid          string, 8-4-4-4-12 lowercase hex
 *   level         integer (0, 1, 4, 5, 6)
 *   layout        string: raid_layout_name ("left-symmetric", ... "none")
 *   chunk         integer, bytes
 *   raid_devices  integer
 *   data_disks    integer
 *   size          integer, exported bytes
 *   health        "optimal" | "degraded" | "failed"
 *   sync_action   "idle" | "frozen" | "resync" | "recover" | "check" |
 *                 "repair" | "reshape"
 *   members       array of {role: integer or null (spare), spec: string or
 *                 null (unknown), state: "in_sync" | "faulty" | "missing" |
 *                 "spare" | "rebuilding" | "stale", errors: integer,
 *                 data_offset: integer, away_seconds: integer or null (not
 *                 missing), missed_regions: integer or null (no map of
 *                 missed regions), and missed_region_bytes: integer only
 *                 when missed_regions is not null}
 *   reshape       null, or {state: "frozen" | "running", position, total,
 *                 boundary (integers, bytes), direction: "forward" |
 *                 "backward", from: GEOM, to: GEOM, error: string or null}
 *                 where GEOM is {level, layout, chunk, raid_devices} as
 *                 above
 *   progress      null, or {action: a sync_action name, done, total
 *                 (bytes), rate (bytes/s), eta_seconds: integer or null
 *                 (unknown), error: string or null}
 *   mismatch_count, events   integers
 *   consistency   "journal" | "bitmap" | "resync"
 *   speed_min, speed_max     integers, bytes/s (0 for speed_max: no limit);
 *                 so that the effect of `set` can be observed
 *
 * Every number is a JSON integer; values above INT64_MAX are encoded as
 * json-c uint64 integers (still plain JSON digits).  Names this build does
 * not know (a corrupt enum value) are encoded as "unknown", never NULL.
 */
#ifndef PROTOCOL_STATUS_JSON_H
#define PROTOCOL_STATUS_JSON_H

#include <json-c/json.h>

#include "array.h"

/* Add the status fields of st to the JSON object obj (which the caller
 * owns; existing keys of the same name are replaced).  Returns 0, or -1
 * when json-c could not allocate (obj then holds a subset of the fields
 * and stays valid for json_object_put). */
int raid_status_json_fill (json_object *obj, const struct raid_status *st);

/* A new object holding only the status fields; NULL when out of memory.
 * Release it with json_object_put. */
json_object *raid_status_json (const struct raid_status *st);

#endif
