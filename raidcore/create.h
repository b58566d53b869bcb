/* nbdkit-raid: creating an array (writing the first superblock records).
 *
 * raid_create validates everything first and writes nothing unless every
 * check passes: a refused create leaves every member byte-for-byte as it was
 * (files that did not exist are not left behind either).
 *
 * Foreign signatures (a filesystem, a partition table, another RAID or LVM
 * label) are found by a probe the caller supplies (nbdraid passes
 * signature.h's signature_probe, libblkid's); raid_create decides when the
 * probe runs (validation, after the member is open, before anything is
 * written) and what a signature means (a refusal unless force; with force,
 * its magic bytes are erased when the array is written).
 */
#ifndef RAIDCORE_CREATE_H
#define RAIDCORE_CREATE_H

#include <stdint.h>
#include <stdbool.h>

#include "sb.h"

/* Defaults (documented in nbdraid(8)). */
#define RAID_CONS_AREA_SIZE ((4u << 20) - SB_RING_SIZE)  /* after the ring: the
                                                            consistency area,
                                                            then the maps of
                                                            missed regions */
#define RAID_MISSED_AREA_SIZE (256u << 10)                 /* 4 maps of 64 KiB */
#define RAID_META_END (4u << 20)                          /* ring + consistency */
#define RAID_DATA_OFFSET_DEFAULT (16u << 20)              /* 12 MiB head room */

/* Signatures a probe found on one member. */
#define RAID_CREATE_SIG_MAX 8           /* magic ranges kept per member */

struct raid_create_sigs {
  /* What was found, for messages: "an ext4 filesystem", several joined by
   * " and "; empty when nothing was found. */
  char what[256];
  int n;                                /* ranges in magic[] */
  struct {
    uint64_t off;                       /* member offset of the magic bytes */
    uint32_t len;
    char type[32];                      /* the signature's name ("ext4") */
  } magic[RAID_CREATE_SIG_MAX];
};

struct member;

/* Probe m (open read-write, not written by the probe) for foreign
 * signatures.  sigs is zeroed by the caller; leave it so when nothing is
 * found.  Returns 0, or an errno value with a message in err (the probe
 * could not read the member: the create is refused). */
typedef int (*raid_create_probe_fn) (struct member *m,
                                     struct raid_create_sigs *sigs,
                                     char *err, size_t errlen);

struct raid_create_opts {
  int level;                 /* 0, 1, 4, 5, 6 */
  int layout;                /* enum raid_layout, or -1 for the level's default */
  uint32_t chunk;            /* bytes, 0 = RAID_CHUNK_DEFAULT */
  uint64_t size;             /* member size: create missing files sparse with
                                this size; 0 = use existing sizes */
  int consistency;           /* enum sb_consistency, 0 = journal */
  uint64_t data_offset;      /* 0 = default */
  bool assume_clean;
  bool force;                /* allow members that already belong to an
                                array or hold a foreign signature */
  raid_create_probe_fn probe;   /* NULL: no foreign-signature check */
  const char *const *members;   /* roles in order: members[i] gets role i */
  int nmembers;
  const char *const *spares;
  int nspares;
};

/* Create the array.
 *
 * Sizes: a member's usable size is o->size when given (a missing file is
 * created sparse with it; an existing member must be at least that large and
 * only its first o->size bytes are used), else its actual size.  Every member
 * must hold data_offset + 2 chunks.  component_size = smallest usable size of
 * the role members - data_offset, rounded down to the chunk; array_size =
 * component_size * data_disks.  Spares must hold data_offset + component_size.
 *
 * The first record (events 1, clean) says "in sync" (resync_offset
 * UINT64_MAX) for raid0, with assume_clean, or when every role member's data
 * area reads as zeroes (new files; existing ones are checked, at most 256 MiB
 * read per member); otherwise resync_offset is 0.  Before the records are
 * written, [0, RAID_META_END) of every pre-existing member is zeroed.
 *
 * Signatures: when o->probe is set, every existing member and spare is
 * probed.  Without force a member holding one is refused ("/dev/sdb holds an
 * ext4 filesystem (use --force to overwrite it)").  With force the magic
 * ranges outside [0, RAID_META_END) (which is zeroed anyway) are zeroed too,
 * so that no other tool (blkid, mdadm's incremental assembly, LVM) takes the
 * member for what it was; except, with assume_clean on a level with
 * redundancy, ranges inside a role member's data area, which are left as
 * they are (the data is declared in sync and must not change) and logged.
 *
 * Logs one RAID_LOG_WARN line per member that force overwrites (when its
 * signatures are erased, in the write phase), and on success one
 * RAID_LOG_WARN line when the members and spares differ in size (which role
 * member sets the component size and how many bytes of each larger member
 * and spare stay unused), then one RAID_LOG_INFO line describing the new
 * array.
 *
 * On success returns 0 and fills array_uuid.  On failure returns -1, sets
 * errno to the reason (EINVAL a bad option or member list, ENOENT a missing
 * member, ENOSPC a member too small, EEXIST a member that belongs to an
 * array or holds a signature, EFBIG an array too large, or the errno of a
 * failed open, read or write) and puts a one-line message in err (e.g.
 * "/tmp/m1: member is too small (1048576 bytes, needs at least 20971520)",
 * "/tmp/m1 is named twice", "/tmp/m2 already belongs to array 1b4e28ba-...;
 * use --force to overwrite", "raid6 needs at least 4 members", "chunk 3000
 * is not a power of two between 4K and 64M", "layout left-symmetric-6 does
 * not exist for raid5"). */
int raid_create (const struct raid_create_opts *o,
                 uint8_t array_uuid[RAID_UUID_LEN], char *err, size_t errlen);

#endif
