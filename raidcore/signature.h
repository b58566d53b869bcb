/* nbdkit-raid: foreign signatures on members (signature.c), found with
 * libblkid, the library wipefs, mkfs and mdadm use.  Part of raidcore so
 * that the server can probe too; nbdraid create passes signature_probe to
 * raid_create.
 */
#ifndef RAIDCORE_SIGNATURE_H
#define RAIDCORE_SIGNATURE_H

#include <stddef.h>

#include "create.h"

/* raid_create's probe (create.h: raid_create_probe_fn): the filesystems,
 * partition tables and RAID, LVM, crypto or swap signatures libblkid finds
 * on m, with valid checksums, described for people ("an ext4 filesystem
 * labelled "data" and a GPT partition table") and with the offset and
 * length of each magic.  Files and block devices are probed whole, through
 * a read-only descriptor of their own; an NBD export through a sparse
 * in-memory image of its size holding its first SIG_NBD_HEAD and last
 * SIG_NBD_TAIL bytes, where every signature libblkid knows lives.  Reads
 * only.  Returns 0 or an errno value (message in err). */
int signature_probe (struct member *m, struct raid_create_sigs *sigs,
                     char *err, size_t errlen);

#define SIG_NBD_HEAD (8u << 20)
#define SIG_NBD_TAIL (1u << 20)

#endif
