/* nbdkit-raid: foreign signatures on members (signature.c), found with
 * libblkid, the library wipefs, mkfs and mdadm use.
 *
 * One probe for every way a member joins: nbdraid create passes
 * signature_probe to raid_create (create.h), and the server's add and
 * reshape (manage.c, reshape.c) call signature_refuse on every member new
 * to the array, so the check holds for scripts that speak the control
 * protocol directly as well as for nbdraid.
 */
#ifndef RAIDCORE_SIGNATURE_H
#define RAIDCORE_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>

#include "create.h"

/* raid_create's probe (create.h: raid_create_probe_fn): the filesystems,
 * partition tables and RAID, LVM, crypto or swap signatures libblkid finds
 * on m, with valid checksums, described for people ("an ext4 filesystem
 * labelled "data" and a GPT partition table") and with the offset and
 * length of each magic.  Files and block devices are probed whole, through
 * a read-only descriptor of their own; an NBD export through a sparse
 * in-memory image of its size holding its first SIG_NBD_HEAD and last
 * SIG_NBD_TAIL bytes, where every signature libblkid knows lives; an
 * export whose description names an nbdkit-raid array (identity.h) holds
 * "the data of nbdkit-raid array UUID", with no magic to erase.  A
 * custom member (member_new_custom: tests) is not probed: nothing found.
 * Reads only.  Returns 0 or an errno value (message in err). */
int signature_probe (struct member *m, struct raid_create_sigs *sigs,
                     char *err, size_t errlen);

#define SIG_NBD_HEAD (8u << 20)
#define SIG_NBD_TAIL (1u << 20)

/* A running array taking m as a new member (add, reshape add): probe it
 * (sigs: zeroed here, filled with what was found).  ours: m carries this
 * array's superblock (a member it let go of): its being another array's
 * export does not count (a nested array's export that was a member here,
 * taken back).  Without force a
 * signature refuses it: EEXIST, "/m/e1 holds an ext4 filesystem labelled
 * "data" (add it with force to overwrite it)".  A probe that cannot read
 * the member refuses it too, force or not (its errno).  Reads only; does
 * the member's I/O, so the caller holds no lock that client I/O or status
 * needs.  Returns 0 when m may be taken. */
int signature_refuse (struct member *m, const char *spec, bool force, bool ours,
                      struct raid_create_sigs *sigs, char *err, size_t errlen);

/* After signature_refuse let force override sigs, when the member is
 * initialised: log one RAID_LOG_WARN line saying what is overwritten and
 * zero the magic bytes of every signature found (as create --force does:
 * no other tool takes the member for what it was; the bytes belong to no
 * array data yet).  Nothing to do when sigs is empty.  0 or the errno of
 * a failed write (message in err). */
int signature_erase (struct member *m, const char *spec,
                     const struct raid_create_sigs *sigs, char *err, size_t errlen);

#endif
