/* nbdkit-raid: tests of the shared helpers (sizes, CRC32C, UUIDs). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

static int checks, failures;
#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; \
      fprintf (stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);          \
      fprintf (stderr, __VA_ARGS__); fprintf (stderr, "\n"); } } while (0)

static void
size_ok (const char *s, uint64_t want)
{
  uint64_t v = 0;
  int r = raid_parse_size (s, &v);
  CHECK (r == 0 && v == want, "parse_size(%s) = %d, %" PRIu64, s, r, v);
}

static void
size_bad (const char *s, int want_errno)
{
  uint64_t v;
  errno = 0;
  int r = raid_parse_size (s, &v);
  CHECK (r == -1 && errno == want_errno, "parse_size(%s) accepted or errno %d", s, errno);
}

int
main (void)
{
  char buf[64], us[RAID_UUID_STRLEN];
  uint8_t u[RAID_UUID_LEN], u2[RAID_UUID_LEN];

  size_ok ("0", 0);
  size_ok ("4096", 4096);
  size_ok ("64K", 65536);
  size_ok ("64k", 65536);
  size_ok ("1M", 1 << 20);
  size_ok ("3G", UINT64_C(3) << 30);
  size_ok ("2T", UINT64_C(2) << 40);
  size_bad ("", EINVAL);
  size_bad ("-1", EINVAL);
  size_bad ("12X", EINVAL);
  size_bad ("1KB", EINVAL);
  size_bad ("K", EINVAL);
  size_bad ("99999999999999999999", ERANGE);
  size_bad ("17179869184T", ERANGE);

  CHECK (raid_crc32c ("123456789", 9) == 0xe3069283u, "crc32c check value %08x",
         raid_crc32c ("123456789", 9));
  CHECK (raid_crc32c ("", 0) == 0, "crc32c of nothing");

  raid_uuid_generate (u);
  raid_uuid_format (u, us);
  CHECK (strlen (us) == 36 && us[8] == '-' && us[13] == '-' && us[14] == '4',
         "uuid format %s", us);
  CHECK (raid_uuid_parse (us, u2) == 0 && memcmp (u, u2, 16) == 0, "uuid round trip");
  CHECK (raid_uuid_parse ("1234", u2) == -1, "short uuid accepted");
  CHECK (raid_uuid_parse ("zzzzzzzz-1234-1234-1234-123456789012", u2) == -1, "bad hex");
  CHECK (!raid_uuid_is_null (u), "random uuid is null");

  CHECK (strcmp (raid_fmt_size (65536, buf, sizeof buf), "64K") == 0, "fmt %s", buf);
  CHECK (strcmp (raid_fmt_size (1536, buf, sizeof buf), "1.5K") == 0, "fmt %s", buf);
  CHECK (strcmp (raid_fmt_size (100, buf, sizeof buf), "100") == 0, "fmt %s", buf);
  CHECK (raid_round_up (4097, 4096) == 8192 && raid_round_down (4097, 4096) == 4096, "round");

  if (failures) {
    fprintf (stderr, "test-util: %d of %d checks failed\n", failures, checks);
    return 1;
  }
  printf ("test-util: %d checks passed\n", checks);
  return 0;
}
