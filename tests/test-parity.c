/* nbdkit-raid: unit test of raidcore/parity.c against an independent
 * byte-at-a-time reference.
 *
 * The reference multiplies in GF(2^8) by shift-and-XOR with the polynomial
 * 0x11d written out here, and computes P as a plain XOR, so a shared mistake
 * in isa-l usage or table set-up cannot make both sides agree.  Every case
 * runs with buffers at several misalignments (uniform and mixed per block)
 * so both the direct and the bounce/alignment-free paths are exercised.
 * The seed is fixed: a failure reproduces exactly.
 */

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parity.h"

#define MAX_K 8
#define NOFFS 4

static const size_t offs[NOFFS] = { 0, 1, 16, 48 };

static unsigned checks, failures;

#define CHECK(cond, ...)                                            \
  do {                                                              \
    checks++;                                                       \
    if (!(cond)) {                                                  \
      failures++;                                                   \
      fprintf (stderr, "%s:%d: check failed: %s: ",                 \
               __FILE__, __LINE__, #cond);                          \
      fprintf (stderr, __VA_ARGS__);                                \
      fputc ('\n', stderr);                                         \
    }                                                               \
  } while (0)

/* ---- reference ---- */

static unsigned char
ref_mul (unsigned char a, unsigned char b)
{
  unsigned r = 0, x = a;

  for (; b; b >>= 1) {
    if (b & 1)
      r ^= x;
    x <<= 1;
    if (x & 0x100)
      x ^= 0x11d;
  }
  return (unsigned char) r;
}

/* ref_pow2_mul[s][x] = 2^s * x */
static unsigned char ref_pow2_mul[MAX_K][256];

static void
ref_init (void)
{
  unsigned char c = 1;

  for (int s = 0; s < MAX_K; s++) {
    for (int x = 0; x < 256; x++)
      ref_pow2_mul[s][x] = ref_mul (c, (unsigned char) x);
    c = ref_mul (c, 2);
  }
}

static void
ref_gen (int k, size_t len, unsigned char *const *d,
         unsigned char *p, unsigned char *q)
{
  memset (p, 0, len);
  if (q)
    memset (q, 0, len);
  for (int s = 0; s < k; s++) {
    const unsigned char *m = ref_pow2_mul[s];
    for (size_t i = 0; i < len; i++)
      p[i] ^= d[s][i];
    if (q)
      for (size_t i = 0; i < len; i++)
        q[i] ^= m[d[s][i]];
  }
}

/* ---- helpers ---- */

static uint64_t rng = 0x9e3779b97f4a7c15;

static uint64_t
rnd64 (uint64_t *st)
{
  uint64_t x = *st;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *st = x;
}

static unsigned
rnd (unsigned n)
{
  return (unsigned) (rnd64 (&rng) % n);
}

static void
fill (uint64_t *st, unsigned char *b, size_t len)
{
  size_t i = 0;

  for (; i + 8 <= len; i += 8) {
    uint64_t x = rnd64 (st);
    memcpy (b + i, &x, 8);
  }
  for (; i < len; i++)
    b[i] = (unsigned char) (rnd64 (st) >> 32);
}

/* A buffer whose usable pointer sits `off` bytes past a 64-byte boundary. */
struct buf {
  unsigned char *mem;
  unsigned char *p;
};

static void
buf_alloc (struct buf *b, size_t len, size_t off)
{
  if (posix_memalign ((void **) &b->mem, 64, len + 128) != 0)
    abort ();
  memset (b->mem, 0xee, len + 128);
  b->p = b->mem + off;
}

/* Index of the first differing byte, or -1. */
static long
first_diff (const unsigned char *a, const unsigned char *b, size_t len)
{
  if (memcmp (a, b, len) == 0)
    return -1;
  for (size_t i = 0; i < len; i++)
    if (a[i] != b[i])
      return (long) i;
  return -1;
}

#define CHECK_SAME(a, b, len, ...)                                  \
  do {                                                              \
    long d_ = first_diff ((a), (b), (len));                         \
    CHECK (d_ == -1, __VA_ARGS__);                                  \
    if (d_ != -1)                                                   \
      fprintf (stderr, "  (first difference at byte %ld)\n", d_);   \
  } while (0)

/* ---- one configuration: k data blocks, nparity, len, offsets ---- */

struct cfg {
  int k, np;
  size_t len;
  int mode;            /* 0..3: every block at offs[mode]; 4: mixed */
};

static size_t
block_off (const struct cfg *c, int i)
{
  return c->mode < NOFFS ? offs[c->mode] : offs[(i + 1) % NOFFS];
}

#define DESC "k=%d np=%d len=%zu mode=%d"
#define ARGS c->k, c->np, c->len, c->mode

/* blocks[] are k data, P, (Q); ref[] the same for the reference. */
struct row {
  struct buf blk[MAX_K + 2], ref[MAX_K + 2], delta[MAX_K];
  unsigned char *b[MAX_K + 2], *r[MAX_K + 2];
};

static void
row_alloc (const struct cfg *c, struct row *w)
{
  for (int i = 0; i < c->k + c->np; i++) {
    buf_alloc (&w->blk[i], c->len, block_off (c, i));
    buf_alloc (&w->ref[i], c->len, 0);
    w->b[i] = w->blk[i].p;
    w->r[i] = w->ref[i].p;
  }
  for (int i = 0; i < c->k; i++)
    buf_alloc (&w->delta[i], c->len, block_off (c, i + 2));
}

/* Nothing was written around any block (its buffer's 0xee guard bytes
 * before and after it are intact). */
static bool
guards_intact (const struct cfg *c, const struct row *w)
{
  for (int i = 0; i < c->k + c->np; i++) {
    const struct buf *b = &w->blk[i];
    size_t before = (size_t) (b->p - b->mem), after = 128 - before;
    for (size_t j = 0; j < before; j++)
      if (b->mem[j] != 0xee)
        return false;
    for (size_t j = 0; j < after; j++)
      if (b->p[c->len + j] != 0xee)
        return false;
  }
  return true;
}

static void
row_free (const struct cfg *c, struct row *w)
{
  for (int i = 0; i < c->k + c->np; i++) {
    free (w->blk[i].mem);
    free (w->ref[i].mem);
  }
  for (int i = 0; i < c->k; i++)
    free (w->delta[i].mem);
}

/* Reference parity of the current data into r[k], r[k+1]; data into r[]. */
static void
row_ref (const struct cfg *c, struct row *w)
{
  for (int i = 0; i < c->k; i++)
    memcpy (w->r[i], w->b[i], c->len);
  ref_gen (c->k, c->len, w->r, w->r[c->k], c->np == 2 ? w->r[c->k + 1] : NULL);
}

static void
check_parity_matches_ref (const struct cfg *c, struct row *w, const char *what)
{
  CHECK_SAME (w->b[c->k], w->r[c->k], c->len, "%s P " DESC, what, ARGS);
  if (c->np == 2)
    CHECK_SAME (w->b[c->k + 1], w->r[c->k + 1], c->len,
                "%s Q " DESC, what, ARGS);
}

static void
test_gen (const struct cfg *c, struct row *w)
{
  int r;

  for (int i = 0; i < c->k; i++)
    fill (&rng, w->b[i], c->len);
  row_ref (c, w);
  r = parity_gen (c->k, c->len, (void *const *) w->b, w->b[c->k],
                  c->np == 2 ? w->b[c->k + 1] : NULL);
  CHECK (r == 0, "parity_gen " DESC, ARGS);
  check_parity_matches_ref (c, w, "gen");
}

/* Random changes to random subsets, folded in with parity_update. */
static void
test_update (const struct cfg *c, struct row *w)
{
  for (int round = 0; round < 3; round++) {
    int slots[MAX_K], n = 0, r;
    unsigned char *deltas[MAX_K];
    unsigned mask = 1 + rnd ((1u << c->k) - 1);    /* non-empty subset */

    for (int s = 0; s < c->k; s++) {
      size_t a, e;

      if (!(mask & (1u << s)))
        continue;
      /* Change a random byte range [a, e) of slot s. */
      a = rnd ((unsigned) c->len);
      e = a + 1 + rnd ((unsigned) (c->len - a));
      memset (w->delta[s].p, 0, c->len);
      fill (&rng, w->delta[s].p + a, e - a);
      for (size_t i = a; i < e; i++)
        w->b[s][i] ^= w->delta[s].p[i];
      slots[n] = s;
      deltas[n++] = w->delta[s].p;
    }
    /* Hand the deltas over in a shuffled order. */
    for (int i = n - 1; i > 0; i--) {
      int j = rnd (i + 1), ts = slots[i];
      unsigned char *td = deltas[i];
      slots[i] = slots[j], deltas[i] = deltas[j];
      slots[j] = ts, deltas[j] = td;
    }
    r = parity_update (c->k, c->len, n, slots, (void *const *) deltas,
                       w->b[c->k], c->np == 2 ? w->b[c->k + 1] : NULL);
    CHECK (r == 0, "parity_update " DESC, ARGS);
    row_ref (c, w);
    check_parity_matches_ref (c, w, "update");
  }
}

/* Erase `miss` (garbage in those buffers), recover, compare every block
 * (inputs must be untouched, outputs restored). */
static void
recover_one (const struct cfg *c, struct row *w, const int *miss, int nmiss)
{
  int r;

  for (int i = 0; i < nmiss; i++)
    fill (&rng, w->b[miss[i]], c->len);
  r = parity_recover (c->k, c->np, c->len, (void *const *) w->b, miss, nmiss);
  CHECK (r == 0, "parity_recover " DESC " missing %d,%d",
         ARGS, miss[0], nmiss > 1 ? miss[1] : -1);
  for (int i = 0; i < c->k + c->np; i++)
    CHECK_SAME (w->b[i], w->r[i], c->len,
                "recover block %d " DESC " missing %d,%d", i, ARGS,
                miss[0], nmiss > 1 ? miss[1] : -1);
}

static void
test_recover (const struct cfg *c, struct row *w)
{
  int n = c->k + c->np;

  row_ref (c, w);
  for (int a = 0; a < n; a++) {
    int m1[1] = { a };
    recover_one (c, w, m1, 1);
    if (c->np == 2)
      for (int b = a + 1; b < n; b++) {
        int m2[2] = { b, a };   /* descending order too */
        recover_one (c, w, m2, 2);
      }
  }
}

/* A single flipped byte in any block must be detected. */
static void
test_check (const struct cfg *c, struct row *w)
{
  int r = parity_check (c->k, c->np, c->len, (void *const *) w->b);

  CHECK (r == 1, "parity_check clean returned %d " DESC, r, ARGS);
  for (int i = 0; i < c->k + c->np; i++) {
    size_t pos = rnd ((unsigned) c->len);
    unsigned char x = (unsigned char) (1 + rnd (255));

    w->b[i][pos] ^= x;
    r = parity_check (c->k, c->np, c->len, (void *const *) w->b);
    CHECK (r == 0, "parity_check flipped block %d byte %zu returned %d "
           DESC, i, pos, r, ARGS);
    w->b[i][pos] ^= x;
  }
  r = parity_check (c->k, c->np, c->len, (void *const *) w->b);
  CHECK (r == 1, "parity_check restored returned %d " DESC, r, ARGS);
}

static void
run_cfg (const struct cfg *c)
{
  struct row w;

  row_alloc (c, &w);
  test_gen (c, &w);
  test_check (c, &w);
  test_update (c, &w);
  test_recover (c, &w);
  CHECK (guards_intact (c, &w), "a write outside the blocks " DESC, ARGS);
  row_free (c, &w);
}

static void
test_matrix (void)
{
  static const size_t lens[] = { 64, 4096, 65536 + 64 * 3, 1 << 20 };

  for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
    for (int k = 1; k <= MAX_K; k++)
      for (int np = 1; np <= 2; np++)
        for (int mode = 0; mode <= NOFFS; mode++) {
          struct cfg c = { k, np, lens[li], mode };
          /* 1 MiB adds many segments, not new alignments: keep it to
           * aligned and mixed (which takes both the bounce and the
           * alignment-free path) so the test stays fast. */
          if (lens[li] == 1 << 20 && mode != 0 && mode != NOFFS)
            continue;
          run_cfg (&c);
        }
}

/* ---- argument errors: -1/EINVAL and nothing written ---- */

static void
test_errors (void)
{
  enum { L = 256 };
  static unsigned char d[3][L] __attribute__ ((aligned (64)));
  static unsigned char pq[2][L] __attribute__ ((aligned (64)));
  static unsigned char saved[2][L];
  void *data[3] = { d[0], d[1], d[2] };
  void *blocks[5] = { d[0], d[1], d[2], pq[0], pq[1] };
  int slots[1] = { 0 }, miss3[3] = { 0, 1, 2 }, r;
  static const size_t badlens[] = { 0, 1, 32, 63, 65, 100, 255 };

  fill (&rng, d[0], sizeof d);
  fill (&rng, pq[0], sizeof pq);
  memcpy (saved, pq, sizeof pq);

#define EXPECT_EINVAL(call, ...)                                    \
  do {                                                              \
    errno = 0;                                                      \
    r = (call);                                                     \
    CHECK (r == -1 && errno == EINVAL, "%s returned %d errno %d: ", \
           #call, r, errno);                                        \
    CHECK (memcmp (saved, pq, sizeof pq) == 0,                      \
           "%s wrote into P/Q", #call);                             \
  } while (0)

  for (size_t i = 0; i < sizeof badlens / sizeof badlens[0]; i++) {
    size_t bl = badlens[i];
    EXPECT_EINVAL (parity_gen (3, bl, data, pq[0], pq[1]));
    EXPECT_EINVAL (parity_gen (3, bl, data, pq[0], NULL));
    EXPECT_EINVAL (parity_update (3, bl, 1, slots, data, pq[0], pq[1]));
    EXPECT_EINVAL (parity_recover (3, 2, bl, blocks, slots, 1));
    EXPECT_EINVAL (parity_check (3, 2, bl, blocks));
  }
  EXPECT_EINVAL (parity_gen (0, L, data, pq[0], pq[1]));
  EXPECT_EINVAL (parity_gen (-1, L, data, pq[0], pq[1]));
  EXPECT_EINVAL (parity_gen (3, L, data, NULL, pq[1]));
  EXPECT_EINVAL (parity_gen (3, L, NULL, pq[0], pq[1]));
  {
    void *hole[3] = { d[0], NULL, d[2] };
    void *bhole[5] = { d[0], d[1], d[2], pq[0], NULL };
    EXPECT_EINVAL (parity_gen (3, L, hole, pq[0], pq[1]));
    EXPECT_EINVAL (parity_update (3, L, 2, (int[]) { 0, 1 }, hole + 1,
                                  pq[0], pq[1]));
    EXPECT_EINVAL (parity_recover (3, 2, L, bhole, slots, 1));
    EXPECT_EINVAL (parity_check (3, 2, L, bhole));
  }

  slots[0] = 3;                 /* slot must be < k */
  EXPECT_EINVAL (parity_update (3, L, 1, slots, data, pq[0], pq[1]));
  slots[0] = -1;
  EXPECT_EINVAL (parity_update (3, L, 1, slots, data, pq[0], pq[1]));
  slots[0] = 0;
  EXPECT_EINVAL (parity_update (3, L, -1, slots, data, pq[0], pq[1]));
  EXPECT_EINVAL (parity_update (3, L, 1, NULL, data, pq[0], pq[1]));
  EXPECT_EINVAL (parity_update (3, L, 1, slots, NULL, pq[0], pq[1]));
  EXPECT_EINVAL (parity_update (3, L, 1, slots, data, NULL, pq[1]));
  CHECK (parity_update (3, L, 0, NULL, NULL, pq[0], pq[1]) == 0,
         "parity_update with n = 0 must be a no-op success");
  CHECK (memcmp (saved, pq, sizeof pq) == 0, "n = 0 update changed P/Q");

  /* nmissing > nparity, bad nparity, bad or repeated indices. */
  EXPECT_EINVAL (parity_recover (3, 1, L, blocks, miss3, 2));
  EXPECT_EINVAL (parity_recover (3, 2, L, blocks, miss3, 3));
  EXPECT_EINVAL (parity_recover (3, 0, L, blocks, miss3, 0));
  EXPECT_EINVAL (parity_recover (3, 3, L, blocks, miss3, 1));
  {
    int bad[2] = { 5, 0 }, dup[2] = { 1, 1 }, neg[1] = { -1 }, pmiss[1] = { 4 };
    EXPECT_EINVAL (parity_recover (3, 2, L, blocks, bad, 1));
    EXPECT_EINVAL (parity_recover (3, 2, L, blocks, dup, 2));
    EXPECT_EINVAL (parity_recover (3, 2, L, blocks, neg, 1));
    /* index k+1 (Q) does not exist with nparity 1 */
    EXPECT_EINVAL (parity_recover (3, 1, L, blocks, pmiss, 1));
  }
  CHECK (parity_recover (3, 2, L, blocks, NULL, 0) == 0,
         "parity_recover with nothing missing must succeed");
  EXPECT_EINVAL (parity_check (3, 3, L, blocks));

  /* Beyond RAID_MAX_MEMBERS (32) data blocks. */
  {
    void *many[40];
    for (int i = 0; i < 40; i++)
      many[i] = d[0];
    EXPECT_EINVAL (parity_gen (40, L, many, pq[0], pq[1]));
  }
#undef EXPECT_EINVAL
}

/* ---- parity_xor_into: any alignment, any length ---- */

static void
test_xor_into (void)
{
  static const size_t lens[] = { 0, 1, 7, 8, 9, 63, 64, 65, 100, 127, 128,
                                 200, 4095, 4096, 4097, 65536 + 13 };
  struct buf a, b, ref;
  const size_t max = 65536 + 64;

  buf_alloc (&a, max, 0);
  buf_alloc (&b, max, 0);
  buf_alloc (&ref, max + 64, 0);
  for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
    for (int oa = 0; oa < 4; oa++)
      for (int ob = 0; ob < 4; ob++) {
        size_t len = lens[li];
        unsigned char *dst = a.mem + offs[oa], *src = b.mem + offs[ob];

        fill (&rng, a.mem, max + 64);
        fill (&rng, b.mem, max + 64);
        memcpy (ref.mem, a.mem, max + 64);
        for (size_t i = 0; i < len; i++)
          ref.mem[offs[oa] + i] ^= src[i];
        parity_xor_into (dst, src, len);
        /* Whole buffer: bytes outside [dst, dst+len) must be untouched. */
        CHECK_SAME (a.mem, ref.mem, max + 64, "xor_into len %zu dst+%zu "
                    "src+%zu", len, offs[oa], offs[ob]);
      }
  free (a.mem);
  free (b.mem);
  free (ref.mem);
}

/* ---- concurrency: 4 threads, different lengths and alignments ---- */

struct thr {
  int id;
  size_t len;
  unsigned fails;
};

static void *
thr_main (void *arg)
{
  struct thr *t = arg;
  uint64_t st = 0x1234567 + t->id * 0x9e3779b9;
  const int k = 3 + t->id;
  struct buf d[MAX_K], p, q;
  unsigned char *dp[MAX_K], *rp, *rq;

  for (int i = 0; i < k; i++) {
    buf_alloc (&d[i], t->len, offs[(t->id + i) % NOFFS]);
    dp[i] = d[i].p;
  }
  buf_alloc (&p, t->len, offs[t->id % NOFFS]);
  buf_alloc (&q, t->len, offs[(t->id + 2) % NOFFS]);
  rp = malloc (t->len);
  rq = malloc (t->len);
  for (int it = 0; it < 20; it++) {
    for (int i = 0; i < k; i++)
      fill (&st, dp[i], t->len);
    if (parity_gen (k, t->len, (void *const *) dp, p.p, q.p) != 0)
      t->fails++;
    ref_gen (k, t->len, dp, rp, rq);
    if (memcmp (p.p, rp, t->len) != 0 || memcmp (q.p, rq, t->len) != 0)
      t->fails++;
  }
  for (int i = 0; i < k; i++)
    free (d[i].mem);
  free (p.mem);
  free (q.mem);
  free (rp);
  free (rq);
  return NULL;
}

static void
test_threads (void)
{
  static const size_t lens[4] = { 64, 4096 + 64, 3 * 65536 + 5 * 64,
                                  (1 << 20) + 3 * 64 };
  struct thr t[4];
  pthread_t th[4];

  for (int i = 0; i < 4; i++) {
    t[i] = (struct thr) { i, lens[i], 0 };
    CHECK (pthread_create (&th[i], NULL, thr_main, &t[i]) == 0,
           "pthread_create %d", i);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join (th[i], NULL);
    CHECK (t[i].fails == 0, "thread %d (len %zu): %u mismatches",
           i, t[i].len, t[i].fails);
  }
}

/* ---- informational benchmark ---- */

static void
test_bench (void)
{
  double x = parity_bench_xor (4, 64 << 10, 0.2);
  double pq = parity_bench_pq (4, 64 << 10, 0.2);

  double copy = parity_bench_pq (1, 4096, 0.01);
  double bad;

  CHECK (x > 0, "parity_bench_xor returned %g", x);
  CHECK (pq > 0, "parity_bench_pq returned %g", pq);
  CHECK (copy > 0, "parity_bench_pq k=1 returned %g", copy);
  errno = 0;
  bad = parity_bench_xor (0, 4096, 0.01);
  CHECK (bad == -1 && errno == EINVAL, "bench k=0 returned %g errno %d",
         bad, errno);
  errno = 0;
  bad = parity_bench_pq (4, 100, 0.01);
  CHECK (bad == -1 && errno == EINVAL, "bench len=100 returned %g errno %d",
         bad, errno);
  printf ("test-parity: isa-l rate, k=4, 64K blocks: xor %.1f GB/s, "
          "pq %.1f GB/s (data bytes)\n", x / 1e9, pq / 1e9);
}

int
main (void)
{
  ref_init ();
  /* The reference itself, on facts of the field with polynomial 0x11d:
   * 2^8 = 0x1d and the inverse of 2 is 0x8e. */
  CHECK (ref_pow2_mul[7][2] == 0x1d, "2^8 = %#x", ref_pow2_mul[7][2]);
  CHECK (ref_mul (2, 0x8e) == 1, "2 * 0x8e = %#x", ref_mul (2, 0x8e));

  test_errors ();
  test_xor_into ();
  test_matrix ();
  test_threads ();
  test_bench ();

  if (failures) {
    printf ("test-parity: %u of %u checks FAILED\n", failures, checks);
    return 1;
  }
  printf ("test-parity: %u checks passed\n", checks);
  return 0;
}
