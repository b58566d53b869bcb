/* nbdkit-raid tests: simulated member devices that can lose power.
 *
 * A cs_disk is a member device with a write cache: a write lands in the
 * cache (pending) and reads see it at once; a flush makes every pending
 * write durable; a FUA write is durable when it completes.  All disks of one
 * cs_world share a counter of completed member writes; the world can be
 * armed to "lose power" right after the N-th one, after which every
 * operation on every disk of the world fails with EIO.  The image a disk
 * leaves behind after the power loss is its durable content plus a subset
 * of its pending writes chosen by a crash mode (enum cs_mode).  The theory,
 * and why the subsets are the only outcomes that matter, is at the top of
 * crashsim.c.
 *
 * Images are immutable, reference-counted, copy-on-write snapshots at page
 * granularity, so a test can build hundreds of post-crash member sets from
 * one workload without copying member images.
 *
 * Threading: every operation of the disks of one world is serialized by the
 * world's lock, so raidcore may call them from any thread (the sync thread
 * included).  Image and world creation and destruction belong to the test's
 * own thread.
 */
#ifndef TESTS_CRASHSIM_H
#define TESTS_CRASHSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct member;
struct cs_world;
struct cs_image;
struct cs_disk;

#define CS_SECTOR 512u           /* torn writes tear at this granularity */
#define CS_PAGE 4096u            /* copy-on-write unit of images */

/* What survives of a disk's pending writes at a power loss.  Disks are
 * independent: each draws its own choices from the caller's generator. */
enum cs_mode {
  CS_LOSE_ALL,                   /* (a) no pending write survives */
  CS_KEEP_ALL,                   /* (b) every pending write survives */
  CS_SUBSET,                     /* (c) each survives with probability 1/2 */
  CS_SUBSET_TORN,                /* (d) as (c), and one pending write, drawn
                                    uniformly, survives only in part: a
                                    prefix of its sectors or a random subset
                                    of them (512-byte member sectors) */
};
#define CS_NMODES 4
const char *cs_mode_name (enum cs_mode mode);   /* "lose-all", "keep-all", ... */

/* xorshift64 generator used for every choice; *state must not be 0. */
uint64_t cs_rand (uint64_t *state);
/* A nonzero generator state derived from up to four numbers. */
uint64_t cs_seed (uint64_t a, uint64_t b, uint64_t c, uint64_t d);

/* ---- worlds ---- */

struct cs_world *cs_world_new (void);
/* Free the world.  Its disks must have been freed first. */
void cs_world_free (struct cs_world *w);

/* Lose power when the n-th member write of this world (counting from 1)
 * completes: that write completes successfully, every later operation fails
 * with EIO.  n == 0 disarms. */
void cs_world_arm (struct cs_world *w, uint64_t n);
/* Lose power now. */
void cs_world_crash_now (struct cs_world *w);
bool cs_world_crashed (struct cs_world *w);

/* Member writes (pwrite and zero calls) completed so far. */
uint64_t cs_world_writes (struct cs_world *w);

/* Record the trace hash after every completed write: log[i] receives the
 * hash after write i + 1, for i < cap.  The hash covers each write's disk
 * id, offset, length and FUA flag (not the data), so two runs of a
 * deterministic workload agree on it write for write.  NULL stops. */
void cs_world_set_trace_log (struct cs_world *w, uint64_t *log, size_t cap);
uint64_t cs_world_trace (struct cs_world *w);

/* The most recent completed write (the crash point after a crash). */
struct cs_write_info {
  int disk_id;
  uint64_t off, len;
  bool fua, zero;
};
void cs_world_last_write (struct cs_world *w, struct cs_write_info *out);

/* ---- images ---- */

/* A base image holding a copy of size bytes of buf (NULL: zeroes). */
struct cs_image *cs_image_new (const void *buf, uint64_t size);
struct cs_image *cs_image_ref (struct cs_image *img);
void cs_image_unref (struct cs_image *img);                /* NULL is a no-op */
uint64_t cs_image_size (const struct cs_image *img);
/* Copy bytes out; off + len must be within the image. */
void cs_image_read (const struct cs_image *img, void *buf, size_t len,
                    uint64_t off);
/* Whether page `page` (CS_PAGE bytes) was written in any layer since the
 * base image, i.e. whether it may differ from the base. */
bool cs_image_page_written (const struct cs_image *img, uint64_t page);

/* ---- disks ---- */

/* A disk whose durable content starts as img (a reference is taken), with
 * no pending writes.  id names it in traces and reports. */
struct cs_disk *cs_disk_new (struct cs_world *w, struct cs_image *img, int id);
void cs_disk_free (struct cs_disk *d);                     /* NULL is a no-op */
int cs_disk_id (const struct cs_disk *d);
uint64_t cs_disk_size (const struct cs_disk *d);

/* A raidcore member (member_new_custom) doing its I/O on d.  Closing the
 * member leaves d alone: the test frees d after the member is closed. */
struct member *cs_disk_member (struct cs_disk *d, const char *name);

/* A failed disk fails every operation with EIO (and counts no write). */
void cs_disk_set_failed (struct cs_disk *d, bool failed);

/* The operations the member performs; each returns 0 or EIO (power lost,
 * disk failed, or range beyond the disk).  A zero is a write of zeroes. */
int cs_disk_pread (struct cs_disk *d, void *buf, size_t len, uint64_t off);
int cs_disk_pwrite (struct cs_disk *d, const void *buf, size_t len,
                    uint64_t off, bool fua);
int cs_disk_zero (struct cs_disk *d, size_t len, uint64_t off, bool fua);
int cs_disk_flush (struct cs_disk *d);

/* Inspection, ignoring power and failure, counting nothing: the content
 * reads see (durable + pending) and the durable content alone. */
void cs_disk_peek (struct cs_disk *d, void *buf, size_t len, uint64_t off);
void cs_disk_peek_durable (struct cs_disk *d, void *buf, size_t len,
                           uint64_t off);
size_t cs_disk_npending (struct cs_disk *d);
/* Whether page `page` may differ from the base image of d's chain. */
bool cs_disk_page_written (struct cs_disk *d, uint64_t page);

/* The image d leaves behind if power is lost now: its durable content plus
 * the pending writes `mode` selects, drawn from *rng.  A description of the
 * choice ("3 pending: applied 0 2, torn 1 (prefix 2/8 sectors)") goes to
 * desc when desc is not NULL.  d itself is unchanged and stays usable.
 * Returns a new reference. */
struct cs_image *cs_disk_crash_image (struct cs_disk *d, enum cs_mode mode,
                                      uint64_t *rng, char *desc, size_t desclen);

#endif
