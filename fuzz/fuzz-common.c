/* nbdkit-raid: helpers shared by the fuzz targets (fuzz.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

void
fuzz_fail (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "FUZZ FINDING: ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n");
  abort ();
}

size_t
fuzz_bytes (struct fuzz_in *in, void *out, size_t len)
{
  size_t k = len < in->n ? len : in->n;

  memcpy (out, in->p, k);
  memset ((uint8_t *) out + k, 0, len - k);
  in->p += k;
  in->n -= k;
  return k;
}

uint8_t fuzz_u8 (struct fuzz_in *in) { uint8_t v; fuzz_bytes (in, &v, 1); return v; }

uint16_t
fuzz_u16 (struct fuzz_in *in)
{
  uint8_t b[2];
  fuzz_bytes (in, b, 2);
  return b[0] | b[1] << 8;
}

uint32_t
fuzz_u32 (struct fuzz_in *in)
{
  uint8_t b[4];
  fuzz_bytes (in, b, 4);
  return b[0] | b[1] << 8 | b[2] << 16 | (uint32_t) b[3] << 24;
}

uint64_t
fuzz_u64 (struct fuzz_in *in)
{
  uint64_t lo = fuzz_u32 (in);
  return lo | (uint64_t) fuzz_u32 (in) << 32;
}
