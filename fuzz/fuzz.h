/* nbdkit-raid: what every fuzz target provides.
 *
 * A target is one source file defining LLVMFuzzerTestOneInput (libFuzzer's
 * entry point) and fuzz_fini.  It is built twice: with clang
 * -fsanitize=fuzzer,address,undefined by `make fuzz` (libFuzzer drives it),
 * and with fuzz/replay.c's main() by `make check` (the checked-in corpus
 * and crash inputs are replayed, any compiler, sanitizers when configured).
 * A target reports a finding by crashing: abort() on a violated property,
 * so both drivers treat it as a failure.
 */
#ifndef FUZZ_FUZZ_H
#define FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* Release what the target keeps between inputs (replay calls it last). */
void fuzz_fini (void);

/* Report a violated property and stop (a finding for either driver). */
void fuzz_fail (const char *fmt, ...)
  __attribute__ ((noreturn, format (printf, 1, 2)));

/* Reading an input: bytes in order; past the end, zeroes. */
struct fuzz_in {
  const uint8_t *p;
  size_t n;
};
uint8_t fuzz_u8 (struct fuzz_in *in);
uint16_t fuzz_u16 (struct fuzz_in *in);
uint32_t fuzz_u32 (struct fuzz_in *in);
uint64_t fuzz_u64 (struct fuzz_in *in);
/* Up to len bytes into out; returns how many were available. */
size_t fuzz_bytes (struct fuzz_in *in, void *out, size_t len);

#endif
