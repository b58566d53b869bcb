/* nbdkit-raid fuzzing: member images in memory, and the arrays the
 * assembly-level targets start from.
 *
 * An image is a sparse member of 4 KiB pages (unwritten pages read as
 * zeroes), served to raidcore as a custom member (member_new_custom), so
 * an input costs only the pages it touches.  A scenario is an array built
 * once per process with the product's own code — raid_create on tmpfs
 * files, assembled over images, written to, and captured while running,
 * as a crash would leave it (dirty, its write-hole log or bitmap full of
 * real records) — whose images every input clones and then mutates.
 *
 * The write oracle: while armed, every write a member receives is checked
 * against the rule the caller set: a write below SB_RING_SIZE must be
 * whole slots each holding zeroes or a record sb_decode accepts (records
 * never land half in a slot, and nothing else lands in the ring: a journal
 * replay aimed at another member's superblock is a finding); with
 * `areas` set, every other write must fall inside one of them.
 */
#ifndef FUZZ_IMAGE_H
#define FUZZ_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "geometry.h"
#include "member.h"
#include "sb.h"

#define IMG_PAGE 4096u

struct img {
  uint64_t size;
  uint64_t npages;
  uint8_t **page;                          /* NULL: zeroes */
  const char *name;
};

struct img *img_new (uint64_t size, const char *name);
struct img *img_clone (const struct img *src);
void img_free (struct img *im);
void img_read (const struct img *im, void *buf, uint64_t len, uint64_t off);
void img_write (struct img *im, const void *buf, uint64_t len, uint64_t off);
/* A custom member over im (im must outlive it). */
struct member *img_member (struct img *im);

/* The write oracle (img_member writes): areas [lo, hi) allowed outside the
 * ring, or none checked when n == 0. */
struct img_area { uint64_t lo, hi; };
void img_oracle (bool armed, const struct img_area *areas, int n);

enum scenario_id {
  SC_RAID5_JOURNAL,          /* 4 members, journal, dirty with records */
  SC_RAID6_RESHAPE,          /* 4 -> 5 members, journal, mid-reshape, dirty */
  SC_RAID5_BITMAP,           /* 4 members, bitmap, dirty, bits set */
  SC_RAID4_RESYNC,           /* 3 members + spare, resync, dirty */
  SC_COUNT
};

struct scenario {
  const char *name;
  int n;                                   /* member images */
  struct img *im[RAID_MAX_MEMBERS];
  struct raid_sb sb;                       /* newest record (member 0's) */
};

/* Scenario i (built on first use; exits the process if it cannot be). */
const struct scenario *scenario_get (int i);
void scenario_free_all (void);

/* The areas a scenario's own writers may touch outside the ring: its
 * consistency area and every data area of either layout. */
int scenario_areas (const struct scenario *s, struct img_area *areas, int max);

/* Assemble images (any order), then exercise the array briefly: start it,
 * read, write, flush, block status, close.  The result of assembly. */
int fuzz_assemble_and_use (struct img **ims, int n, bool force, char *err,
                           size_t errlen);

#endif
