/* nbdkit-raid: small shared helpers (no nbdkit dependency).
 *
 * Logging: raidcore never prints by itself; it calls raid_log(), whose sink
 * the embedding program sets once at start-up (the plugin routes errors to
 * nbdkit_error and debug to nbdkit_debug; nbdraid prints to stderr).
 */
#ifndef RAIDCORE_UTIL_H
#define RAIDCORE_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

enum raid_log_level { RAID_LOG_ERROR, RAID_LOG_WARN, RAID_LOG_INFO, RAID_LOG_DEBUG };

typedef void (*raid_log_fn) (enum raid_log_level lvl, const char *msg);

/* Install the sink; NULL restores the default (stderr, no debug). */
void raid_log_set_sink (raid_log_fn fn);
void raid_log (enum raid_log_level lvl, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* Parse a SIZE: decimal number with optional binary suffix K, M, G, T
 * (case-insensitive, optional trailing 'B' or 'iB' is NOT accepted: keep
 * it as nbdkit does).  A bare number is bytes.  Returns 0 and sets *out,
 * or -1 with errno = EINVAL (syntax) or ERANGE (overflow of uint64). */
int raid_parse_size (const char *s, uint64_t *out);

/* Format a size as a human string ("64K", "1.5G" ...) into buf. */
const char *raid_fmt_size (uint64_t v, char *buf, size_t len);

/* UUIDs are 16 raw bytes; text form is 8-4-4-4-12 lowercase hex. */
#define RAID_UUID_LEN 16
#define RAID_UUID_STRLEN 37   /* including NUL */
void raid_uuid_generate (uint8_t uuid[RAID_UUID_LEN]);
void raid_uuid_format (const uint8_t uuid[RAID_UUID_LEN], char out[RAID_UUID_STRLEN]);
int raid_uuid_parse (const char *s, uint8_t uuid[RAID_UUID_LEN]);
bool raid_uuid_is_null (const uint8_t uuid[RAID_UUID_LEN]);

/* CRC32C (Castagnoli), the standard inverted form: crc32c("123456789") ==
 * 0xe3069283. */
uint32_t raid_crc32c (const void *buf, size_t len);
/* Chained form: state starts at ~0u; the CRC is ~state after the last call. */
uint32_t raid_crc32c_update (uint32_t state, const void *buf, size_t len);

/* Aligned allocation for parity/member buffers: alignment RAID_ALIGN,
 * size rounded up to a multiple of RAID_ALIGN.  Free with free(). */
#define RAID_ALIGN 64
void *raid_alloc_aligned (size_t size);

static inline bool raid_is_pow2 (uint64_t v) { return v && !(v & (v - 1)); }
static inline uint64_t raid_min_u64 (uint64_t a, uint64_t b) { return a < b ? a : b; }
static inline uint64_t raid_max_u64 (uint64_t a, uint64_t b) { return a > b ? a : b; }
static inline uint64_t raid_round_down (uint64_t v, uint64_t a) { return v - v % a; }
static inline uint64_t raid_round_up (uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* The description of an errno value, untranslated: unlike strerror it
 * takes no locale lock (it is called from many I/O threads at once when a
 * member fails).  Never NULL. */
const char *raid_strerror (int err);

/* Cut a stream socket's connection now, dropping what it has not sent.
 * A TCP connection is reset (connect to AF_UNSPEC aborts it; SO_LINGER 0
 * makes the last close reset it too, should that be refused): the bytes
 * still in its send queue are discarded, never retransmitted, and the peer
 * sees ECONNRESET.  shutdown(2) alone queues a FIN behind them, and the
 * kernel keeps retransmitting them even after the last close, so a peer
 * behind a lost route receives them once the route is back.  Other
 * sockets (UNIX: bytes are delivered at once, nothing is left to recall)
 * get shutdown(SHUT_RDWR).  Either way, reads on fd then see the end.
 * Errors are ignored (fd may be dead already). */
void raid_sock_abort (int fd);

/* Current wall-clock time in nanoseconds / monotonic nanoseconds. */
uint64_t raid_now_realtime_ns (void);
uint64_t raid_now_mono_ns (void);

#endif
