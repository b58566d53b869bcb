/* nbdkit-raid: in-memory array fixture for the raidcore tests.
 *
 * Arrays are created with raid_create on tmpfs files, loaded into memory,
 * and assembled (in reverse order) over in-memory custom members whose
 * failures a test injects deterministically (fail_reads / fail_writes).
 * A byte model of the array is kept for comparisons.
 */
#ifndef TESTS_FIXTURE_H
#define TESTS_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "array.h"
#include "geometry.h"
#include "member.h"

extern int checks, failures;

#define CHECK(cond, ...) do {                                          \
    checks++;                                                           \
    if (!(cond)) {                                                      \
      failures++;                                                       \
      fprintf (stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);            \
      fprintf (stderr, __VA_ARGS__);                                    \
      fprintf (stderr, "\n");                                           \
      if (failures > 20) exit (1);                                      \
    }                                                                   \
  } while (0)

/* ---- in-memory member with fault injection ---- */
struct memdev {
  uint8_t *data;
  uint64_t size;
  int fail_reads, fail_writes;       /* nonzero: every such op returns EIO */
  unsigned long nreads, nwrites, nflushes;
  unsigned long long rbytes;         /* bytes read */
  uint64_t bad_lo, bad_hi;           /* reads overlapping [bad_lo, bad_hi) fail */
};

extern const struct member_custom_ops md_ops;

struct fixture {
  int level, layout, n;
  uint32_t chunk;
  uint64_t data_offset;
  struct memdev dev[RAID_MAX_MEMBERS];
  struct raid_array *a;
  uint8_t *model;
  uint64_t size;
  uint64_t member_size;
};

/* The options make_array_ex assembles with (all zero unless a test sets
 * them first). */
extern struct raid_assemble_opts fixture_opts;
/* The consistency policy make_array_ex creates with (0: the default). */
extern int fixture_consistency;

extern uint64_t rng_state;
uint64_t rnd (void);

/* Member i gets role i; the array is assembled and its model zeroed. */
void make_array_ex (struct fixture *f, int level, int layout, int n, uint32_t chunk,
                    uint64_t member_size, uint64_t data_offset);
/* 8 MiB members, data at 4 MiB. */
void make_array (struct fixture *f, int level, int layout, int n, uint32_t chunk);
void free_array (struct fixture *f);
/* Rows whose parity does not verify on the member buffers (role = member). */
int verify_parity (struct fixture *f, uint32_t skip_mask);
/* Read the whole array and compare with the model. */
void verify_contents (struct fixture *f, const char *when);
void random_op (struct fixture *f, uint8_t *tmp, uint64_t maxlen);
void workload (struct fixture *f, int nops);
/* Print the summary line; the exit status. */
int test_summary (const char *name);

#endif
