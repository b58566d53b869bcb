/* nbdkit-raid: is a candidate member this array itself? (theory:
 * identity.h) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "array-int.h"
#include "identity.h"
#include "util.h"

#define PROBE_LEN 4096u
#define PROBES 2

void
identity_export_description (const uint8_t uuid[RAID_UUID_LEN],
                             char buf[IDENTITY_DESC_LEN])
{
  char u[RAID_UUID_STRLEN];

  raid_uuid_format (uuid, u);
  snprintf (buf, IDENTITY_DESC_LEN, "%s%s", IDENTITY_TAG, u);
}

void
raid_array_export_description (struct raid_array *a, char *buf, size_t len)
{
  char d[IDENTITY_DESC_LEN];

  identity_export_description (a->sb.array_uuid, d);   /* the uuid never changes */
  snprintf (buf, len, "%s", d);
}

int
identity_check_description (const uint8_t uuid[RAID_UUID_LEN], struct member *m,
                            char *err, size_t errlen)
{
  const char *desc = member_description (m);
  char mine[IDENTITY_DESC_LEN];

  identity_export_description (uuid, mine);
  if (desc == NULL || strcmp (desc, mine) != 0)
    return 0;
  snprintf (err, errlen, "%s is an export of this array itself (its export "
            "description is \"%s\"): an array cannot be its own member",
            member_spec (m), desc);
  return -1;
}

/* A random 4 KiB-aligned offset of a PROBE_LEN range below size. */
static uint64_t
random_offset (uint64_t size)
{
  uint64_t r = 0;

  if (getrandom (&r, sizeof r, 0) != sizeof r)
    r = raid_now_mono_ns ();
  return r % (size / PROBE_LEN) * PROBE_LEN;
}

/* One probe: read [off, off + PROBE_LEN) of m while the marker is armed;
 * *hit says whether the array saw a read overlapping it. */
static int
probe_once (struct raid_array *a, struct member *m, void *buf, uint64_t off, bool *hit)
{
  struct identity_probe *p = &a->probe;
  int r;

  member_uncache (m, off, PROBE_LEN);      /* a cached copy would hide us */
  atomic_store (&p->hits, 0);
  atomic_store (&p->lo, off);
  atomic_store_explicit (&p->hi, off + PROBE_LEN, memory_order_release);
  r = member_pread (m, buf, PROBE_LEN, off);
  atomic_store_explicit (&p->hi, 0, memory_order_release);
  *hit = atomic_load (&p->hits) > 0;
  return r;
}

int
identity_check_member (struct raid_array *a, uint64_t array_size, struct member *m,
                       char *err, size_t errlen)
{
  uint64_t size = raid_min_u64 (member_size (m), array_size);
  bool hit = true;
  void *buf;
  int r = 0;

  if (identity_check_description (a->sb.array_uuid, m, err, errlen) < 0)
    return EBUSY;
  if (size < PROBE_LEN)
    return 0;                  /* no byte could be read through both */
  if (!(buf = raid_alloc_aligned (PROBE_LEN)))
    return ENOMEM;
  for (int i = 0; i < PROBES && hit && r == 0; i++)
    r = probe_once (a, m, buf, random_offset (size), &hit);
  free (buf);
  if (r) {
    snprintf (err, errlen, "%s: cannot read it: %s", member_spec (m), raid_strerror (r));
    return r;
  }
  if (!hit)
    return 0;
  snprintf (err, errlen, "%s serves this array's own bytes (its reads arrive at "
            "this array): an array cannot be its own member", member_spec (m));
  return EBUSY;
}
