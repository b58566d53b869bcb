/* nbdkit-raid bench: isa-l's raw parity rate on this CPU.
 *
 * What it measures: how many bytes of *data* per second isa-l can turn into
 * parity, with everything in cache-friendly chunk-sized buffers, no I/O and
 * no locking: xor_gen (P, raid4/5) and pq_gen (P+Q, raid6) for a few data
 * member counts at the default 64 KiB chunk.  This is the ceiling the
 * engine's parity work can reach; the bench compares the RAID export's
 * write throughput against it.
 *
 * Usage: parity-rate [SECONDS-PER-CASE]   (default 0.5)
 * Output: one line per case, "xor_gen k=4 chunk=65536: 12345.6 MB/s".
 * Exit 1 when isa-l reports an error (a bad length or alignment).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <isa-l.h>

#define CHUNK (64u << 10)
#define MAXV 16

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Run xor_gen (pq = 0) or pq_gen (pq = 1) over k data buffers for about
 * `secs` seconds; return data bytes per second, or -1 on an isa-l error. */
static double
rate (int k, int pq, double secs, void **bufs)
{
  int vects = k + 1 + pq;
  long iters = 0;
  double t0 = now (), t;

  do {
    for (int i = 0; i < 64; i++) {
      int r = pq ? pq_gen (vects, CHUNK, bufs) : xor_gen (vects, CHUNK, bufs);
      if (r != 0)
        return -1;
    }
    iters += 64;
    t = now () - t0;
  } while (t < secs);
  return (double) iters * k * CHUNK / t;
}

int
main (int argc, char **argv)
{
  double secs = argc > 1 ? atof (argv[1]) : 0.5;
  static const int ks[] = { 2, 3, 4, 8 };
  void *bufs[MAXV];

  for (int i = 0; i < MAXV; i++) {
    if (posix_memalign (&bufs[i], 64, CHUNK) != 0) {
      perror ("posix_memalign");
      return 1;
    }
    memset (bufs[i], i * 37 + 1, CHUNK);
  }
  for (int pq = 0; pq <= 1; pq++) {
    for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++) {
      double r = rate (ks[j], pq, secs, bufs);
      if (r < 0) {
        fprintf (stderr, "parity-rate: %s failed for k=%d\n",
                 pq ? "pq_gen" : "xor_gen", ks[j]);
        return 1;
      }
      printf ("%s k=%d chunk=%u: %.1f MB/s\n",
              pq ? "pq_gen " : "xor_gen", ks[j], CHUNK, r / 1e6);
    }
  }
  for (int i = 0; i < MAXV; i++)
    free (bufs[i]);
  return 0;
}
