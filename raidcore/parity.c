/* nbdkit-raid: parity generation and reconstruction (contract: parity.h).
 *
 * Theory
 * ------
 * A row is k data blocks D_0..D_{k-1} in syndrome-slot order plus
 *   P = sum D_j              (XOR)
 *   Q = sum 2^j * D_j        (GF(2^8), polynomial 0x11d, generator 2)
 * i.e. the rows "all ones" and "2^j" under an identity matrix, the same
 * generator as isa-l's gf_gen_rs_matrix (k + 2, k).  Every function below is
 * a linear map over these k + 2 symbols per byte position, which is why the
 * work can be cut into independent segments of SEG bytes and why recovery
 * is a matrix inversion.
 *
 * Kernels and their preconditions (isa-l 2.30):
 *   xor_gen / pq_gen   fastest; need >= 2 sources, len a multiple of 32 and
 *                      (on the SSE/AVX/AVX2 paths, which use aligned and
 *                      non-temporal moves) 32- or 64-byte aligned pointers;
 *                      they return nonzero on bad input.
 *   ec_encode_data, ec_encode_data_update, gf_vect_mad
 *                      table-driven GF dot product / multiply-accumulate;
 *                      no alignment requirement, len >= 64.
 * Every pointer handed to xor_gen/pq_gen is 64-byte aligned.  The
 * outputs fix the offset m from a 64-byte boundary that the kernels work
 * at: when they share one, the segment is cut where they reach a boundary,
 * its first 64 - m and last m bytes go through one zero-padded 64-byte
 * line per block, and its middle is aligned for every pointer at that
 * offset.  A client's buffer cut into chunks shares one offset, and the
 * engine gives the parity and rebuilt blocks it allocates the offset of
 * the client's buffer (stripe.c), so a misaligned client costs two lines
 * per segment, not a slower kernel: measured on 64 KiB blocks, k = 4, with
 * every block 16 bytes off, 57 GB/s of data for P and 22 GB/s for P+Q
 * against 20 and 8 GB/s before.  A source off the outputs' offset is first
 * copied ("bounced") into this thread's scratch, and outputs that do not
 * share an offset are produced in scratch and copied out (slow: the
 * kernels' non-temporal stores are read back).  When more than half of the
 * sources of a plain XOR are off, the alignment-free ec_encode_data with
 * the all-ones row is faster than bouncing them (~1.5x for k = 4..8), so
 * that path is taken instead.  For P+Q, bouncing measured equal or better
 * in every mix.
 *
 * Work is done in segments of at most SEG bytes so that a bounced segment is
 * still in cache when the kernel reads it and so that a length always fits
 * isa-l's int.  SEG is a multiple of 64, so every segment keeps the caller's
 * len granularity and every pointer keeps its base alignment.
 *
 * Invariants:
 *   - All argument checks come before the first byte is written; isa-l can
 *     only fail on arguments, so a failing call leaves outputs untouched
 *     (asserted impossible after validation, still reported as EINVAL).
 *   - The only mutable state is the per-thread scratch (grown on demand,
 *     freed by a thread-exit destructor).  The coefficient tables are built
 *     once under pthread_once and read-only afterwards.
 *   - Inputs are never written, even where isa-l's prototypes lack const.
 */

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <isa-l/erasure_code.h>
#include <isa-l/gf_vect_mul.h>
#include <isa-l/raid.h>

#include "geometry.h"
#include "parity.h"

/* Largest k accepted: a row never has more data blocks than members. */
#define PARITY_MAX_K RAID_MAX_MEMBERS

/* Segment size.  On the bounce path 16 KiB .. 128 KiB measured equal within
 * noise (k = 2..16), 1 MiB clearly worse; 64 KiB keeps the k + 2 scratch
 * slots of k <= 14 inside a 1 MiB L2.  The aligned kernels do not care. */
#define SEG ((size_t) 64 << 10)

#define ALIGN 64

/* ---- immutable tables ---- */

static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static pthread_key_t scratch_key;       /* only to free scratch at exit */
static bool have_key;

/* coef[r][j]: row r (0 = P, 1 = Q) coefficient of data slot j. */
static unsigned char coef[2][PARITY_MAX_K];

/* gen_tbls[k]: ec_init_tables expansion of the 2 x k matrix {P row, Q row},
 * P row first, so its first 32*k bytes alone are the 1 x k P table. */
static unsigned char gen_tbls[PARITY_MAX_K + 1][2 * PARITY_MAX_K * 32];

static void scratch_free (void *p);

static void
tables_init (void)
{
  unsigned char m[2 * PARITY_MAX_K];
  unsigned char x = 1;

  for (int j = 0; j < PARITY_MAX_K; j++) {
    coef[0][j] = 1;
    coef[1][j] = x;
    x = gf_mul (x, 2);
  }
  for (int k = 1; k <= PARITY_MAX_K; k++) {
    memcpy (m, coef[0], k);
    memcpy (m + k, coef[1], k);
    ec_init_tables (k, 2, m, gen_tbls[k]);
  }
  /* Only fails on resource exhaustion; the scratch then leaks at thread
   * exit instead of being freed, which is harmless. */
  have_key = pthread_key_create (&scratch_key, scratch_free) == 0;
}

static void
ensure_tables (void)
{
  pthread_once (&tables_once, tables_init);
}

/* ---- per-thread scratch ---- */

static __thread unsigned char *scratch;
static __thread size_t scratch_size;

/* Thread-exit destructor of scratch_key. */
static void
scratch_free (void *p)
{
  free (p);
  scratch = NULL;
  scratch_size = 0;
}

/* Return this thread's scratch of at least `size` bytes (64-aligned), or
 * NULL with errno = ENOMEM.  Allocates only when it must grow. */
static unsigned char *
get_scratch (size_t size)
{
  void *p;

  if (size <= scratch_size)
    return scratch;
  if (posix_memalign (&p, ALIGN, size) != 0) {
    errno = ENOMEM;
    return NULL;
  }
  free (scratch);
  scratch = p;
  scratch_size = size;
  if (have_key)
    (void) pthread_setspecific (scratch_key, scratch);
  return scratch;
}

/* ---- helpers ---- */

static bool
aligned (const void *p)
{
  return ((uintptr_t) p & (ALIGN - 1)) == 0;
}

static int
einval (void)
{
  errno = EINVAL;
  return -1;
}

static bool
len_ok (size_t len)
{
  return len > 0 && len % 64 == 0;
}

static bool
ptrs_ok (int n, void *const *v)
{
  if (v == NULL)
    return false;
  for (int i = 0; i < n; i++)
    if (v[i] == NULL)
      return false;
  return true;
}

/* Generate P (and Q if q) of one segment of n <= SEG bytes (a multiple of
 * ALIGN) from k >= 2 sources whose pointers mostly sit on ALIGN
 * boundaries: the misaligned ones are bounced through scratch (or, when
 * most sources of a plain XOR are, the alignment-free kernel runs).  The
 * scratch of gen_segment is in place. */
static int
gen_aligned (int k, size_t n, unsigned char *const *src,
             unsigned char *p, unsigned char *q, unsigned char *s)
{
  void *v[PARITY_MAX_K + 2];
  int misaligned = 0, r;

  for (int i = 0; i < k; i++)
    misaligned += !aligned (src[i]);
  if (q == NULL && 2 * misaligned > k) {
    ec_encode_data ((int) n, k, 1, gen_tbls[k], (unsigned char **) src, &p);
    return 0;
  }
  for (int i = 0; i < k; i++) {
    v[i] = src[i];
    if (!aligned (src[i]))
      v[i] = memcpy (s + (size_t) i * SEG, src[i], n);
  }
  v[k] = aligned (p) ? p : s + (size_t) k * SEG;
  v[k + 1] = q == NULL || aligned (q) ? q : s + (size_t) (k + 1) * SEG;

  r = q ? pq_gen (k + 2, (int) n, v) : xor_gen (k + 1, (int) n, v);
  if (r != 0)
    return einval ();           /* impossible: n is a multiple of 64 */
  if (v[k] != p)
    memcpy (p, v[k], n);
  if (q && v[k + 1] != q)
    memcpy (q, v[k + 1], n);
  return 0;
}

/* Bytes [off, off + len) of the segment, len < ALIGN, through one bounced
 * line per block (zero-padded: the padding's parity is zero). */
static int
gen_edge (int k, size_t off, size_t len, unsigned char *const *src,
          unsigned char *p, unsigned char *q, unsigned char *s)
{
  void *v[PARITY_MAX_K + 2];
  int r;

  memset (s, 0, (size_t) (k + 2) * ALIGN);
  for (int i = 0; i < k + 2; i++)
    v[i] = s + (size_t) i * ALIGN;
  for (int i = 0; i < k; i++)
    memcpy (v[i], src[i] + off, len);
  r = q ? pq_gen (k + 2, ALIGN, v) : xor_gen (k + 1, ALIGN, v);
  if (r != 0)
    return einval ();           /* impossible: one aligned line each */
  memcpy (p + off, v[k], len);
  if (q)
    memcpy (q + off, v[k + 1], len);
  return 0;
}

/* Bounce slots: k sources and 2 outputs of SEG bytes (the lines of
 * gen_edge use the first of them). */
#define SCRATCH(k) ((size_t) ((k) + 2) * SEG)

static bool
all_aligned (int k, unsigned char *const *src, const unsigned char *p,
             const unsigned char *q)
{
  for (int i = 0; i < k; i++)
    if (!aligned (src[i]))
      return false;
  return aligned (p) && (q == NULL || aligned (q));
}

/* The outputs' offset from an ALIGN boundary, when they share one (else
 * 0).  It is the offset the kernels work at: bouncing an output costs more
 * than bouncing a source (the kernels' stores bypass the cache, and the
 * copy out reads them back), so sources off it are the ones bounced, and
 * callers give outputs the offset of the buffers they come with. */
static size_t
common_offset (const unsigned char *p, const unsigned char *q)
{
  size_t m = (uintptr_t) p & (ALIGN - 1);

  return q == NULL || ((uintptr_t) q & (ALIGN - 1)) == m ? m : 0;
}

/* Generate P (and Q if q) of one segment of n <= SEG bytes from k sources
 * (already offset to the segment).  Any alignment.  When the outputs sit
 * m bytes past an ALIGN boundary (with a client's buffer cut into chunks),
 * the segment is cut where they reach one: its middle goes to the aligned
 * kernels, the first ALIGN - m and last m bytes through bounced lines.
 * The only failure (no scratch) comes before any byte is written. */
static int
gen_segment (int k, size_t n, unsigned char *const *src,
             unsigned char *p, unsigned char *q)
{
  unsigned char *mid[PARITY_MAX_K], *s;
  size_t m, h;

  if (k == 1) {
    memcpy (p, src[0], n);
    if (q)
      memcpy (q, src[0], n);
    return 0;
  }
  m = common_offset (p, q);
  s = NULL;
  if (!all_aligned (k, src, p, q) && (s = get_scratch (SCRATCH (k))) == NULL)
    return -1;
  if (m == 0)
    return gen_aligned (k, n, src, p, q, s);
  h = ALIGN - m;
  for (int i = 0; i < k; i++)
    mid[i] = src[i] + h;
  if (gen_edge (k, 0, h, src, p, q, s) == -1 ||
      (n > ALIGN && gen_aligned (k, n - ALIGN, mid, p + h, q ? q + h : NULL, s) == -1))
    return -1;
  return gen_edge (k, n - m, m, src, p, q, s);
}

/* gen_segment over [0, len) in segments.  Alignment is the same in every
 * segment, so the only possible failure (no scratch) happens in the first
 * one, before anything is written. */
static int
gen_all (int k, size_t len, unsigned char *const *src,
         unsigned char *p, unsigned char *q)
{
  unsigned char *s[PARITY_MAX_K];

  for (size_t off = 0; off < len; off += SEG) {
    size_t n = len - off < SEG ? len - off : SEG;

    for (int i = 0; i < k; i++)
      s[i] = src[i] + off;
    if (gen_segment (k, n, s, p + off, q ? q + off : NULL) == -1)
      return -1;
  }
  return 0;
}

/* ---- parity_gen ---- */

int
parity_gen (int k, size_t len, void *const *data, void *p, void *q)
{
  if (k < 1 || k > PARITY_MAX_K || !len_ok (len) || !ptrs_ok (k, data)
      || p == NULL)
    return einval ();
  ensure_tables ();
  return gen_all (k, len, (unsigned char *const *) data, p, q);
}

/* ---- parity_update ---- */

/* Each delta is folded into P (and Q) with one multiply-accumulate pass;
 * measured 1.2x-10x faster than generating delta-P/delta-Q with pq_gen over
 * a zero-filled row and XORing them in, for every n in 1..k (k = 8).  The
 * segment loop is outside the delta loop so the P/Q segment stays in cache
 * across the n passes. */
int
parity_update (int k, size_t len, int n, const int *slots,
               void *const *deltas, void *p, void *q)
{
  if (k < 1 || k > PARITY_MAX_K || !len_ok (len) || n < 0 || p == NULL)
    return einval ();
  if (n > 0 && (slots == NULL || !ptrs_ok (n, deltas)))
    return einval ();
  for (int i = 0; i < n; i++)
    if (slots[i] < 0 || slots[i] >= k)
      return einval ();
  ensure_tables ();

  for (size_t off = 0; off < len; off += SEG) {
    int seg = (int) (len - off < SEG ? len - off : SEG);
    unsigned char *out[2] = { (unsigned char *) p + off,
                              q ? (unsigned char *) q + off : NULL };

    for (int i = 0; i < n; i++) {
      unsigned char *d = (unsigned char *) deltas[i] + off;

      if (q)
        ec_encode_data_update (seg, k, 2, slots[i], gen_tbls[k], d, out);
      else
        gf_vect_mad (seg, k, slots[i], gen_tbls[k], d, out[0]);
    }
  }
  return 0;
}

/* ---- parity_recover ---- */

/* Validate a blocks[]/missing[] description.  Returns 0 or -1 (EINVAL). */
static int
check_erasures (int k, int nparity, size_t len, void *const *blocks,
                const int *missing, int nmissing)
{
  int nblocks = k + nparity;

  if (k < 1 || k > PARITY_MAX_K || (nparity != 1 && nparity != 2)
      || !len_ok (len) || !ptrs_ok (nblocks, blocks)
      || nmissing < 0 || nmissing > nparity
      || (nmissing > 0 && missing == NULL))
    return einval ();
  for (int i = 0; i < nmissing; i++) {
    if (missing[i] < 0 || missing[i] >= nblocks)
      return einval ();
    for (int j = 0; j < i; j++)
      if (missing[j] == missing[i])
        return einval ();
  }
  return 0;
}

/* Row `b` of the (k+2) x k generator: identity for data, then P, then Q. */
static void
gen_row (int k, int b, unsigned char *row)
{
  if (b < k) {
    memset (row, 0, k);
    row[b] = 1;
  }
  else
    memcpy (row, coef[b - k], k);
}

/* General erasure decode.  Picks the first k surviving blocks, inverts
 * their generator rows, and expresses each missing block as a combination
 * of the survivors (data: a row of the inverse; parity: its generator row
 * times the inverse); one ec_encode_data pass writes every missing block.
 * Needs no alignment. */
static int
recover_general (int k, int nparity, size_t len, void *const *blocks,
                 const int *missing, int nmissing)
{
  unsigned char b[PARITY_MAX_K * PARITY_MAX_K];
  unsigned char inv[PARITY_MAX_K * PARITY_MAX_K];
  unsigned char dec[2 * PARITY_MAX_K], row[PARITY_MAX_K];
  unsigned char tbls[2 * PARITY_MAX_K * 32];
  unsigned char *src[PARITY_MAX_K], *out[2];
  int surv[PARITY_MAX_K], ns = 0;

  for (int i = 0; i < k + nparity && ns < k; i++) {
    bool gone = false;
    for (int j = 0; j < nmissing; j++)
      gone |= missing[j] == i;
    if (!gone)
      surv[ns++] = i;
  }
  if (ns < k)
    return einval ();           /* impossible: nmissing <= nparity */
  for (int i = 0; i < k; i++)
    gen_row (k, surv[i], b + i * k);
  if (gf_invert_matrix (b, inv, k) != 0)
    return einval ();           /* impossible: any k rows are independent */

  for (int m = 0; m < nmissing; m++) {
    unsigned char *d = dec + m * k;

    gen_row (k, missing[m], row);
    for (int j = 0; j < k; j++) {
      unsigned char acc = 0;
      for (int t = 0; t < k; t++)
        acc ^= gf_mul (row[t], inv[t * k + j]);
      d[j] = acc;
    }
  }
  ec_init_tables (k, nmissing, dec, tbls);

  for (size_t off = 0; off < len; off += SEG) {
    int seg = (int) (len - off < SEG ? len - off : SEG);

    for (int i = 0; i < k; i++)
      src[i] = (unsigned char *) blocks[surv[i]] + off;
    for (int m = 0; m < nmissing; m++)
      out[m] = (unsigned char *) blocks[missing[m]] + off;
    ec_encode_data (seg, k, nmissing, tbls, src, out);
  }
  return 0;
}

/* One data block `lost` missing, P present: D_lost = P ^ sum of the others. */
static int
recover_one_data (int k, size_t len, void *const *blocks, int lost)
{
  unsigned char *src[PARITY_MAX_K];
  int n = 0;

  for (int i = 0; i <= k; i++)
    if (i != lost)
      src[n++] = blocks[i];
  return gen_all (n, len, src, blocks[lost], NULL);
}

int
parity_recover (int k, int nparity, size_t len, void *const *blocks,
                const int *missing, int nmissing)
{
  bool lost_p = false, lost_q = false;
  int lost_data = 0, first_data = -1;

  if (check_erasures (k, nparity, len, blocks, missing, nmissing) == -1)
    return -1;
  ensure_tables ();

  for (int i = 0; i < nmissing; i++) {
    if (missing[i] == k)
      lost_p = true;
    else if (missing[i] == k + 1)
      lost_q = true;
    else if (lost_data++ == 0)
      first_data = missing[i];
  }

  if (nmissing == 0)
    return 0;
  if (lost_data == 0 && lost_p)        /* P, or P and Q: regenerate */
    return gen_all (k, len, (unsigned char *const *) blocks,
                    blocks[k], lost_q ? blocks[k + 1] : NULL);
  if (lost_data == 1 && nmissing == 1) /* one data block, P present */
    return recover_one_data (k, len, blocks, first_data);
  return recover_general (k, nparity, len, blocks, missing, nmissing);
}

/* ---- parity_check ---- */

int
parity_check (int k, int nparity, size_t len, void *const *blocks)
{
  unsigned char *const *b = (unsigned char *const *) blocks;
  unsigned char *s, *p2, *q2;

  if (check_erasures (k, nparity, len, blocks, NULL, 0) == -1)
    return -1;
  ensure_tables ();

  /* Generated P/Q go to two slots after gen_segment's, at the sources'
   * offset from an ALIGN boundary (so that they are not bounced). */
  s = get_scratch (SCRATCH (k) + 2 * SEG + ALIGN);
  if (s == NULL)
    return -1;
  p2 = s + SCRATCH (k) + ((uintptr_t) b[0] & (ALIGN - 1));
  q2 = nparity == 2 ? p2 + SEG : NULL;

  for (size_t off = 0; off < len; off += SEG) {
    size_t n = len - off < SEG ? len - off : SEG;
    unsigned char *src[PARITY_MAX_K];

    for (int i = 0; i < k; i++)
      src[i] = b[i] + off;
    if (gen_segment (k, n, src, p2, q2) == -1)
      return -1;
    if (memcmp (p2, b[k] + off, n) != 0
        || (q2 && memcmp (q2, b[k + 1] + off, n) != 0))
      return 0;
  }
  return 1;
}

/* ---- parity_xor_into ---- */

/* gf_vect_mad with the coefficient-1 table is isa-l's fastest in-place XOR
 * for any alignment (measured within 10% of a hand-written AVX-512 loop);
 * it needs len >= 64, so short buffers and the tail of overlong ones use
 * a word loop. */
void
parity_xor_into (void *dst, const void *src, size_t len)
{
  unsigned char *d = dst;
  const unsigned char *s = src;
  const size_t chunk = (size_t) 1 << 30;

  ensure_tables ();
  while (len >= 64) {
    size_t n = len < chunk ? len : chunk;

    gf_vect_mad ((int) n, 1, 0, gen_tbls[1], (unsigned char *) s, d);
    d += n;
    s += n;
    len -= n;
  }
  for (; len >= 8; d += 8, s += 8, len -= 8) {
    uint64_t x, y;
    memcpy (&x, d, 8);
    memcpy (&y, s, 8);
    x ^= y;
    memcpy (d, &x, 8);
  }
  for (; len > 0; len--)
    *d++ ^= *s++;
}

/* ---- benchmarks ---- */

static double
now_s (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Time xor_gen (nout 1) or pq_gen (nout 2) over k aligned blocks of len
 * bytes for about `seconds`; bytes of data per second, or -1 with errno.
 * k == 1 times the copy parity_gen does instead. */
static double
bench (int k, size_t len, double seconds, int nout)
{
  void *v[PARITY_MAX_K + 2];
  unsigned char *buf;
  double t0, t;
  uint64_t iters = 0;
  int r = 0;

  if (k < 1 || k > PARITY_MAX_K || !len_ok (len) || len > INT_MAX / 2
      || !(seconds >= 0)) {
    errno = EINVAL;
    return -1;
  }
  if (posix_memalign ((void **) &buf, ALIGN, (k + nout) * len) != 0) {
    errno = ENOMEM;
    return -1;
  }
  for (size_t i = 0; i < (k + nout) * len; i++)
    buf[i] = (unsigned char) (i * 131 + (i >> 12));
  for (int i = 0; i < k + nout; i++)
    v[i] = buf + i * len;

  t0 = now_s ();
  do {
    if (k == 1) {
      for (int i = 1; i <= nout; i++)
        memcpy (v[i], v[0], len);
    }
    else if (nout == 2)
      r |= pq_gen (k + 2, (int) len, v);
    else
      r |= xor_gen (k + 1, (int) len, v);
    iters++;
  } while ((t = now_s ()) - t0 < seconds);
  free (buf);
  if (r != 0) {
    errno = EINVAL;
    return -1;
  }
  return (double) iters * k * len / (t > t0 ? t - t0 : 1e-9);
}

double
parity_bench_xor (int k, size_t len, double seconds)
{
  return bench (k, len, seconds, 1);
}

double
parity_bench_pq (int k, size_t len, double seconds)
{
  return bench (k, len, seconds, 2);
}
