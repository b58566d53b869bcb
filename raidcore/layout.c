/* nbdkit-raid: building a layout from a superblock (see layout.h). */
#include <stdio.h>

#include "layout.h"

int
layout_from_sb (const struct raid_sb *sb, int id, struct layout *L,
                char *err, size_t errlen)
{
  bool reshaping = sb->reshape_state != SB_RESHAPE_NONE;
  int other_n = id == LAYOUT_CUR ? (int) sb->new_raid_devices : (int) sb->raid_disks;
  int r;

  r = id == LAYOUT_CUR
    ? raid_geom_init (&L->g, sb->level, sb->layout, sb->chunk, sb->raid_disks,
                      err, errlen)
    : raid_geom_init (&L->g, sb->new_level, sb->new_layout, sb->new_chunk,
                      sb->new_raid_devices, err, errlen);
  if (r < 0)
    return -1;
  L->id = id;
  L->rows = sb_layout_rows (sb, id == LAYOUT_NEXT);
  L->mirror_role = L->mirror_slot = -1;
  for (int i = 0; i < RAID_MAX_MEMBERS; i++) {
    L->slot[i] = -1;
    L->data_offset[i] = 0;
  }
  for (int t = 0; t < (int) sb->nmembers; t++) {
    const struct sb_member_entry *e = &sb->members[t];
    if (e->role < 0 || e->state == SB_MEMBER_EMPTY || e->state == SB_MEMBER_SPARE)
      continue;
    if (e->role >= L->g.raid_disks && reshaping && e->role < other_n)
      continue;                           /* a member only the other layout uses */
    if (e->role >= L->g.raid_disks ||
        (L->slot[e->role] >= 0 && e->state != SB_MEMBER_FAULTY &&
         sb->members[L->slot[e->role]].state != SB_MEMBER_FAULTY)) {
      snprintf (err, errlen, "superblock member table is inconsistent (role %d)", e->role);
      return -1;
    }
    if (L->slot[e->role] >= 0 && e->state == SB_MEMBER_FAULTY)
      continue;
    L->slot[e->role] = t;
    L->data_offset[e->role] = id == LAYOUT_CUR ? e->data_offset : e->new_data_offset;
  }
  return 0;
}

uint64_t
layout_data_offset (const struct layout *L)
{
  for (int r = 0; r < L->g.raid_disks; r++)
    if (L->slot[r] >= 0)
      return L->data_offset[r];
  return 0;
}
