/* nbdkit-raid: small shared helpers. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <isa-l/crc.h>

#include "util.h"

static raid_log_fn log_sink;

void
raid_log_set_sink (raid_log_fn fn)
{
  log_sink = fn;
}

void
raid_log (enum raid_log_level lvl, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (log_sink)
    log_sink (lvl, msg);
  else if (lvl != RAID_LOG_DEBUG)
    fprintf (stderr, "%s\n", msg);
}

int
raid_parse_size (const char *s, uint64_t *out)
{
  char *end;
  uint64_t v, mult = 1;

  if (s == NULL || *s < '0' || *s > '9') {
    errno = EINVAL;
    return -1;
  }
  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno == ERANGE)
    return -1;
  switch (*end) {
  case '\0': break;
  case 'k': case 'K': mult = UINT64_C(1) << 10; end++; break;
  case 'm': case 'M': mult = UINT64_C(1) << 20; end++; break;
  case 'g': case 'G': mult = UINT64_C(1) << 30; end++; break;
  case 't': case 'T': mult = UINT64_C(1) << 40; end++; break;
  default: errno = EINVAL; return -1;
  }
  if (*end != '\0') {
    errno = EINVAL;
    return -1;
  }
  if (v > UINT64_MAX / mult) {
    errno = ERANGE;
    return -1;
  }
  *out = v * mult;
  return 0;
}

const char *
raid_fmt_size (uint64_t v, char *buf, size_t len)
{
  static const char sfx[] = "KMGTPE";
  int i = -1;
  double d = v;

  while (d >= 1024 && i < 5) {
    d /= 1024;
    i++;
  }
  if (i < 0)
    snprintf (buf, len, "%" PRIu64, v);
  else if (d == (uint64_t) d)
    snprintf (buf, len, "%" PRIu64 "%c", (uint64_t) d, sfx[i]);
  else
    snprintf (buf, len, "%.1f%c", d, sfx[i]);
  return buf;
}

void
raid_uuid_generate (uint8_t uuid[RAID_UUID_LEN])
{
  size_t got = 0;

  while (got < RAID_UUID_LEN) {
    ssize_t r = getrandom (uuid + got, RAID_UUID_LEN - got, 0);
    if (r > 0)
      got += r;
    else if (errno != EINTR)
      abort ();                 /* getrandom cannot fail on Linux >= 3.17 */
  }
  uuid[6] = (uuid[6] & 0x0f) | 0x40;   /* version 4 */
  uuid[8] = (uuid[8] & 0x3f) | 0x80;   /* RFC 4122 variant */
}

void
raid_uuid_format (const uint8_t u[RAID_UUID_LEN], char out[RAID_UUID_STRLEN])
{
  snprintf (out, RAID_UUID_STRLEN,
            "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
            "%02x%02x%02x%02x%02x%02x",
            u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7],
            u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

int
raid_uuid_parse (const char *s, uint8_t uuid[RAID_UUID_LEN])
{
  int n = 0;

  for (const char *p = s; *p; p++) {
    int hi, lo;
    if (*p == '-')
      continue;
    if (n >= RAID_UUID_LEN || !p[1])
      return -1;
    if (sscanf (p, "%1x%1x", (unsigned *) &hi, (unsigned *) &lo) != 2)
      return -1;
    uuid[n++] = hi << 4 | lo;
    p++;
  }
  return n == RAID_UUID_LEN ? 0 : -1;
}

bool
raid_uuid_is_null (const uint8_t uuid[RAID_UUID_LEN])
{
  for (int i = 0; i < RAID_UUID_LEN; i++)
    if (uuid[i])
      return false;
  return true;
}

uint32_t
raid_crc32c (const void *buf, size_t len)
{
  return ~crc32_iscsi ((unsigned char *) buf, (int) len, 0xFFFFFFFF);
}

const char *
raid_strerror (int err)
{
  const char *s = strerrordesc_np (err);
  return s ? s : "Unknown error";
}

uint32_t
raid_crc32c_update (uint32_t state, const void *buf, size_t len)
{
  return crc32_iscsi ((unsigned char *) buf, (int) len, state);
}

void *
raid_alloc_aligned (size_t size)
{
  void *p;

  size = raid_round_up (size ? size : 1, RAID_ALIGN);
  if (posix_memalign (&p, RAID_ALIGN, size) != 0) {
    errno = ENOMEM;
    return NULL;
  }
  return p;
}

uint64_t
raid_now_realtime_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t
raid_now_mono_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
raid_sock_abort (int fd)
{
  struct linger lg = { .l_onoff = 1, .l_linger = 0 };
  struct sockaddr sa = { .sa_family = AF_UNSPEC };

  (void) setsockopt (fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  (void) connect (fd, &sa, sizeof sa);
  (void) shutdown (fd, SHUT_RDWR);
}
