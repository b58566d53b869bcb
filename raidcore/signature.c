/* nbdkit-raid: foreign signatures on members, found with libblkid (see
 * signature.h).
 *
 * The probe is wipefs's: every chain (superblocks: filesystems, RAID, LVM,
 * crypto, swap; partitions: partition tables, GPT even without its
 * protective MBR) is enabled with the MAGIC flags, and blkid_do_probe is
 * called until it finds nothing more, each call returning one signature.
 * Unlike wipefs it does not accept bad checksums: a stale half-overwritten
 * label is not worth a refusal, and blkid, mkfs and the kernel do not trust
 * one either.  libblkid reports a GPT by its primary header only; the
 * backup header, which fdisk would restore the table from, is found here
 * through the primary's pointer to it, so that --force erases both.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>
#include <sys/mman.h>
#include <unistd.h>

#include <blkid.h>

#include "identity.h"
#include "member.h"
#include "member-io.h"
#include "signature.h"
#include "util.h"

#define COPY_BUF (1u << 20)

/* Friendlier names of common signatures; the rest are named by type and
 * libblkid's USAGE. */
static const struct { const char *type, *text; } known[] = {
  { "linux_raid_member", "a Linux md RAID superblock" },
  { "LVM2_member", "an LVM physical volume (LVM2_member)" },
  { "LVM1_member", "an LVM1 physical volume" },
  { "crypto_LUKS", "a LUKS encrypted volume" },
  { "swap", "a swap area" },
  { "dos", "an MBR (dos) partition table" },
  { "gpt", "a GPT partition table" },
  { "PMBR", "a protective MBR (GPT)" },
};

static const char *
article (const char *word)
{
  return strchr ("aeiouxAEIOUX", word[0]) ? "an" : "a";
}

/* "an ext4 filesystem labelled "data"" */
static void
describe (const char *type, const char *usage, const char *label,
          bool table, char *buf, size_t len)
{
  size_t n = 0;

  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (strcmp (known[i].type, type) == 0) {
      n = snprintf (buf, len, "%s", known[i].text);
      break;
    }
  if (n == 0) {
    const char *what = table ? "partition table"
      : strcmp (usage, "filesystem") == 0 ? "filesystem"
      : strcmp (usage, "raid") == 0 ? "RAID signature"
      : strcmp (usage, "crypto") == 0 ? "encrypted volume"
      : "signature";
    n = snprintf (buf, len, "%s %s %s", article (type), type, what);
  }
  if (label && *label && n < len)
    snprintf (buf + n, len - n, " labelled \"%s\"", label);
}

/* Add one signature to sigs: its magic range, and its description unless
 * one of the same type is there already (GPT's primary and backup). */
static void
record (struct raid_create_sigs *sigs, const char *type, const char *text,
        uint64_t off, size_t len)
{
  size_t w = strlen (sigs->what);
  bool seen = false;

  for (int i = 0; i < sigs->n; i++)
    seen |= strcmp (sigs->magic[i].type, type) == 0;
  if (sigs->n < RAID_CREATE_SIG_MAX) {
    sigs->magic[sigs->n].off = off;
    sigs->magic[sigs->n].len = (uint32_t) len;
    snprintf (sigs->magic[sigs->n].type, sizeof sigs->magic[0].type, "%s", type);
    sigs->n++;
  }
  if (!seen && w < sizeof sigs->what)
    snprintf (sigs->what + w, sizeof sigs->what - w, "%s%s",
              w ? " and " : "", text);
}

/* A GPT whose primary header is at off (LBA 1, so off is the sector
 * size): its backup header, where the primary says it is. */
static void
gpt_backup (int fd, uint64_t off, const char *text,
            struct raid_create_sigs *sigs)
{
  unsigned char hdr[40], magic[8];
  uint64_t alt, boff;

  if ((off != 512 && off != 4096) ||
      pread (fd, hdr, sizeof hdr, off) != (ssize_t) sizeof hdr ||
      memcmp (hdr, "EFI PART", 8) != 0)
    return;
  memcpy (&alt, hdr + 32, 8);
  alt = le64toh (alt);
  if (alt <= 1 || alt > UINT64_MAX / off)
    return;
  boff = alt * off;
  if (pread (fd, magic, 8, boff) == 8 && memcmp (magic, "EFI PART", 8) == 0)
    record (sigs, "gpt", text, boff, 8);
}

/* The signature blkid_do_probe just found on fd, if it names one. */
static void
found (blkid_probe pr, int fd, struct raid_create_sigs *sigs)
{
  const char *type, *usage = "", *label = NULL, *off;
  size_t mlen = 0;
  bool table = false;
  char text[160];

  if (blkid_probe_lookup_value (pr, "TYPE", &type, NULL) == 0) {
    blkid_probe_lookup_value (pr, "USAGE", &usage, NULL);
    blkid_probe_lookup_value (pr, "LABEL", &label, NULL);
    if (blkid_probe_lookup_value (pr, "SBMAGIC_OFFSET", &off, NULL) != 0 ||
        blkid_probe_lookup_value (pr, "SBMAGIC", NULL, &mlen) != 0)
      off = NULL;
  }
  else if (blkid_probe_lookup_value (pr, "PTTYPE", &type, NULL) == 0) {
    table = true;
    if (blkid_probe_lookup_value (pr, "PTMAGIC_OFFSET", &off, NULL) != 0 ||
        blkid_probe_lookup_value (pr, "PTMAGIC", NULL, &mlen) != 0)
      off = NULL;
  }
  else
    return;
  describe (type, usage, label, table, text, sizeof text);
  record (sigs, type, text, off ? strtoull (off, NULL, 10) : 0,
          off ? mlen : 0);
  if (table && off && strcmp (type, "gpt") == 0)
    gpt_backup (fd, strtoull (off, NULL, 10), text, sigs);
}

/* Copy [off, off+len) of m into fd at the same offset. */
static int
copy_range (struct member *m, int fd, void *buf, uint64_t off, uint64_t len,
            char *err, size_t errlen)
{
  while (len > 0) {
    size_t n = len < COPY_BUF ? len : COPY_BUF;
    int e = member_pread (m, buf, n, off);

    if (e) {
      snprintf (err, errlen, "%s: reading at %" PRIu64 " to look for "
                "signatures: %s", member_spec (m), off, raid_strerror (e));
      return e;
    }
    if (pwrite (fd, buf, n, off) != (ssize_t) n) {
      e = errno ? errno : EIO;
      snprintf (err, errlen, "%s: in-memory image: %s", member_spec (m),
                raid_strerror (e));
      return e;
    }
    off += n;
    len -= n;
  }
  return 0;
}

/* An NBD member: a sparse memfd of its size holding its head and tail. */
static int
nbd_image (struct member *m, int *fdp, char *err, size_t errlen)
{
  uint64_t size = member_size (m);
  uint64_t head = size < SIG_NBD_HEAD ? size : SIG_NBD_HEAD;
  uint64_t tail = size - head < SIG_NBD_TAIL ? size - head : SIG_NBD_TAIL;
  void *buf = malloc (COPY_BUF);
  int fd, r;

  fd = memfd_create ("nbdraid-probe", MFD_CLOEXEC);
  if (buf == NULL || fd == -1 || ftruncate (fd, (off_t) size) == -1) {
    r = errno;
    snprintf (err, errlen, "%s: in-memory image to look for signatures: %s",
              member_spec (m), raid_strerror (r));
    goto out;
  }
  r = copy_range (m, fd, buf, 0, head, err, errlen);
  if (r == 0)
    r = copy_range (m, fd, buf, size - tail, tail, err, errlen);
 out:
  free (buf);
  if (r != 0 && fd >= 0)
    close (fd);
  *fdp = r == 0 ? fd : -1;
  return r;
}

/* An NBD export that describes itself as an nbdkit-raid array
 * (identity.h) serves that array's data: a "signature" with no magic bytes
 * (nothing to erase: force takes the export as it is).  This array's own
 * export is refused earlier, force or not (identity_check_member). */
static void
other_array (struct member *m, struct raid_create_sigs *sigs)
{
  const char *desc = member_description (m);
  char text[160];

  if (desc == NULL || strncmp (desc, IDENTITY_TAG, strlen (IDENTITY_TAG)) != 0)
    return;
  snprintf (text, sizeof text, "the data of %s (it is that array's export)", desc);
  record (sigs, "nbdkit-raid", text, 0, 0);
}

/* signature_probe; other: look for another array's export too. */
static int
probe (struct member *m, bool other, struct raid_create_sigs *sigs,
       char *err, size_t errlen)
{
  blkid_probe pr;
  int fd, r;

  if (m->be->kind == MEMBER_CUSTOM)
    return 0;                              /* a test's device: no probe */
  if (member_is_nbd (m)) {
    if (other)
      other_array (m, sigs);
    if ((r = nbd_image (m, &fd, err, errlen)) != 0)
      return r;
  }
  else if ((fd = open (member_spec (m), O_RDONLY | O_CLOEXEC)) == -1) {
    r = errno;
    snprintf (err, errlen, "%s: opening it to look for signatures: %s",
              member_spec (m), raid_strerror (r));
    return r;
  }
  pr = blkid_new_probe ();
  if (pr == NULL || blkid_probe_set_device (pr, fd, 0, 0) != 0) {
    snprintf (err, errlen, "%s: libblkid cannot probe it", member_spec (m));
    r = EIO;
    goto out;
  }
  blkid_probe_enable_superblocks (pr, 1);
  blkid_probe_set_superblocks_flags (pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE |
                                     BLKID_SUBLKS_LABEL | BLKID_SUBLKS_MAGIC);
  blkid_probe_enable_partitions (pr, 1);
  blkid_probe_set_partitions_flags (pr, BLKID_PARTS_MAGIC | BLKID_PARTS_FORCE_GPT);
  while ((r = blkid_do_probe (pr)) == 0)
    found (pr, fd, sigs);
  if (r < 0) {
    snprintf (err, errlen, "%s: libblkid could not read it", member_spec (m));
    r = EIO;
  }
  else
    r = 0;
 out:
  if (pr)
    blkid_free_probe (pr);
  close (fd);
  return r;
}

int
signature_probe (struct member *m, struct raid_create_sigs *sigs,
                 char *err, size_t errlen)
{
  return probe (m, true, sigs, err, errlen);
}

int
signature_refuse (struct member *m, const char *spec, bool force, bool ours,
                  struct raid_create_sigs *sigs, char *err, size_t errlen)
{
  int r;

  memset (sigs, 0, sizeof *sigs);
  if ((r = probe (m, !ours, sigs, err, errlen)) != 0)
    return r;
  if (sigs->what[0] == '\0' || force)
    return 0;
  snprintf (err, errlen, "%s holds %s (add it with force to overwrite it)",
            spec, sigs->what);
  return EEXIST;
}

int
signature_erase (struct member *m, const char *spec,
                 const struct raid_create_sigs *sigs, char *err, size_t errlen)
{
  static const uint8_t zero[256];

  if (sigs->what[0] == '\0')
    return 0;
  raid_log (RAID_LOG_WARN, "%s: overwriting %s (force)", spec, sigs->what);
  for (int k = 0; k < sigs->n; k++) {
    uint64_t off = sigs->magic[k].off;
    uint32_t len = sigs->magic[k].len;
    int e;

    if (len == 0 || len > sizeof zero || off + len > member_size (m))
      continue;
    if ((e = member_pwrite (m, zero, len, off, false)) != 0) {
      snprintf (err, errlen, "%s: erasing the %s signature at offset %" PRIu64
                ": %s", spec, sigs->magic[k].type, off, raid_strerror (e));
      return e;
    }
  }
  return 0;
}
