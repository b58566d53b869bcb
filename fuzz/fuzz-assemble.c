/* nbdkit-raid fuzz target: assembly from member images whose superblock
 * records an attacker wrote (CRC-valid), then a little I/O.
 *
 * Input: byte 0 picks the scenario (image.h: arrays left as a crash leaves
 * them, with write-hole log, bitmap, a reshape in progress, a spare);
 * byte 1 options (bit 0: force; bit 1: drop the member byte 2 names;
 * bit 2: assemble in reverse order); then operations until the input ends:
 *   op % 4 == 0  patch the member's newest record: u8 member, u16 offset
 *                (mod 2560), u8 count (mod 16, + 1), bytes; CRC resealed
 *   op % 4 == 1  append a newer record: the newest one with events + u8 + 1
 *                in its slot, then patched as above
 *   op % 4 == 2  raw bytes anywhere: u8 member, u32 offset, u8 count, bytes
 *   op % 4 == 3  set one field of the newest record: u8 member, u8 field
 *                (a table of the v1 fields), u64 value; CRC resealed
 * Properties: assembly refuses or serves without crashing, leaking or
 * hanging; no write lands in a superblock ring that is not a whole valid
 * record (image.h's oracle); a record the product writes passes its own
 * readers' rules (RAIDCORE_STRICT_RECORDS).
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "image.h"
#include "util.h"

#define V1_LEN 2560
#define MAX_OPS 64

/* Offsets and widths of the v1 record's fields (sb.c's table). */
static const struct { uint16_t off; uint8_t width; } fields[] = {
  { 24, 8 }, { 112, 4 }, { 116, 4 }, { 120, 4 }, { 124, 4 }, { 128, 8 },
  { 136, 8 }, { 144, 8 }, { 152, 8 }, { 160, 8 }, { 168, 4 }, { 172, 4 },
  { 176, 8 }, { 184, 4 }, { 188, 4 }, { 192, 8 }, { 200, 4 }, { 204, 4 },
  { 208, 4 }, { 212, 4 }, { 216, 8 }, { 224, 4 }, { 228, 4 }, { 232, 8 },
  { 240, 8 }, { 248, 8 }, { 256, 8 },
  /* member table entries 0..4: role, state, data_offset, new_data_offset,
   * recovery_offset */
  { 512 + 16, 4 }, { 512 + 20, 4 }, { 512 + 24, 8 }, { 512 + 32, 8 }, { 512 + 40, 8 },
  { 576 + 16, 4 }, { 576 + 20, 4 }, { 576 + 24, 8 }, { 576 + 32, 8 }, { 576 + 40, 8 },
  { 640 + 16, 4 }, { 640 + 20, 4 }, { 640 + 24, 8 }, { 640 + 32, 8 }, { 640 + 40, 8 },
  { 704 + 16, 4 }, { 704 + 20, 4 }, { 704 + 24, 8 }, { 704 + 32, 8 }, { 704 + 40, 8 },
  { 768 + 16, 4 }, { 768 + 20, 4 }, { 768 + 24, 8 }, { 768 + 32, 8 }, { 768 + 40, 8 },
};
#define NFIELDS (sizeof fields / sizeof fields[0])

static void
put_le (uint8_t *p, uint64_t v, int width)
{
  for (int i = 0; i < width; i++)
    p[i] = v >> (8 * i);
}

static uint64_t
get_le (const uint8_t *p, int width)
{
  uint64_t v = 0;
  for (int i = width - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static void
reseal (uint8_t *slot)
{
  put_le (slot + 8, 0, 4);
  put_le (slot + 8, raid_crc32c (slot, SB_SLOT_SIZE), 4);
}

/* The slot of im's newest valid record (0 when there is none). */
static unsigned
newest_slot (struct img *im)
{
  static uint8_t slot[SB_SLOT_SIZE];
  static struct raid_sb sb;
  uint64_t best = 0;
  unsigned at = 0;

  for (unsigned s = 0; s < SB_RING_SLOTS; s++) {
    img_read (im, slot, SB_SLOT_SIZE, (uint64_t) s * SB_SLOT_SIZE);
    if (sb_decode (slot, &sb, NULL, 0) == 0 && sb.events >= best) {
      best = sb.events;
      at = s;
    }
  }
  return at;
}

static void
one_op (struct fuzz_in *in, struct img **ims, int n)
{
  static uint8_t slot[SB_SLOT_SIZE];
  uint8_t op = fuzz_u8 (in);
  struct img *im = ims[fuzz_u8 (in) % n];
  unsigned s = newest_slot (im);
  uint64_t at = (uint64_t) s * SB_SLOT_SIZE;

  img_read (im, slot, SB_SLOT_SIZE, at);
  switch (op % 4) {
  case 1: {                                /* a newer record */
    uint64_t ev = get_le (slot + 24, 8) + fuzz_u8 (in) + 1;
    put_le (slot + 24, ev, 8);
    at = ev % SB_RING_SLOTS * SB_SLOT_SIZE;
  }
    /* fall through */
  case 0: {
    uint16_t off = fuzz_u16 (in) % V1_LEN;
    size_t k = fuzz_u8 (in) % 16 + 1;
    if (off + k > V1_LEN)
      k = V1_LEN - off;
    fuzz_bytes (in, slot + off, k);
    reseal (slot);
    img_write (im, slot, SB_SLOT_SIZE, at);
    break;
  }
  case 2: {
    uint64_t off = fuzz_u32 (in) % im->size;
    uint8_t buf[256];
    size_t k = fuzz_u8 (in);
    if (k > im->size - off)
      k = im->size - off;
    fuzz_bytes (in, buf, k);
    img_write (im, buf, k, off);
    break;
  }
  case 3: {
    unsigned f = fuzz_u8 (in) % NFIELDS;
    put_le (slot + fields[f].off, fuzz_u64 (in), fields[f].width);
    reseal (slot);
    img_write (im, slot, SB_SLOT_SIZE, at);
    break;
  }
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct fuzz_in in = { data, size };
  const struct scenario *sc = scenario_get (fuzz_u8 (&in));
  uint8_t opts = fuzz_u8 (&in), drop = fuzz_u8 (&in) % sc->n;
  struct img *ims[RAID_MAX_MEMBERS], *use[RAID_MAX_MEMBERS];
  int n = 0;
  char err[512];

  for (int i = 0; i < sc->n; i++)
    ims[i] = img_clone (sc->im[i]);
  for (int k = 0; k < MAX_OPS && in.n > 0; k++)
    one_op (&in, ims, sc->n);
  for (int i = 0; i < sc->n; i++) {
    int j = opts & 4 ? sc->n - 1 - i : i;
    if (!(opts & 2) || j != drop)
      use[n++] = ims[j];
  }
  img_oracle (true, NULL, 0);
  fuzz_assemble_and_use (use, n, opts & 1, err, sizeof err);
  img_oracle (false, NULL, 0);
  for (int i = 0; i < sc->n; i++)
    img_free (ims[i]);
  return 0;
}

void
fuzz_fini (void)
{
  scenario_free_all ();
  mio_shutdown ();
}
