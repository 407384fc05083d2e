using System.Buffers.Binary;
using System.Numerics;
using Iommu;
using Iommu.Mm;
using Vfio.Type1.Uapi;

namespace Vfio.Type1;

public sealed partial class VfioIommuType1
{
    [KernelSymbol("vfio_iommu_type1_dirty_pages")]
    private Errno DirtyPagesIoctl(ProcessAddressSpace caller, Span<byte> arg)
    {
        if (!V2)
        {
            return ErrorDetail.Fail(Errno.EACCES, "DIRTY_PAGES: container is not TYPE1v2");
        }

        if (arg.Length < 8)
        {
            return ErrorDetail.Fail(Errno.EFAULT, "DIRTY_PAGES: argument shorter than 8 bytes");
        }

        (uint argsz, uint flags) = VfioIommuType1DirtyBitmap.Read(arg);
        const uint mask = VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP | VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
        if (argsz < 8 || (flags & ~mask) != 0)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"DIRTY_PAGES: argsz {argsz} < 8 or unknown flags 0x{flags:x}");
        }

        if (BitOperations.PopCount(flags) != 1)
        {
            return ErrorDetail.Fail(Errno.EINVAL, "DIRTY_PAGES: exactly one flag is needed");
        }

        if (flags == VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START)
        {
            lock (_lock)
            {
                if (!DirtyTracking)
                {
                    // vfio_dma_bitmap_alloc_all: a mapping of more than INT_MAX pages fails the whole START
                    // and tracking stays off (the bitmaps already made are never looked at again).
                    foreach (VfioDma dma in _dmas)
                    {
                        Errno e = AllocBitmap(dma);
                        if (e != Errno.None)
                        {
                            foreach (VfioDma d in _dmas)
                            {
                                d.Bitmap = null;
                            }

                            return e;
                        }
                    }

                    DirtyTracking = true;
                }
            }

            return Errno.None;
        }

        if (flags == VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP)
        {
            lock (_lock)
            {
                foreach (VfioDma dma in _dmas)
                {
                    dma.Bitmap = null;
                }

                DirtyTracking = false;
            }

            return Errno.None;
        }

        if (argsz < 8 + 40)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"DIRTY_PAGES(GET_BITMAP): argsz {argsz} < 48");
        }

        if (arg.Length < 48)
        {
            return ErrorDetail.Fail(Errno.EFAULT, "DIRTY_PAGES(GET_BITMAP): range not readable");
        }

        (ulong iova, ulong size, VfioBitmap bm) = VfioIommuType1DirtyBitmapGet.Read(arg[VfioIommuType1DirtyBitmap.StructSize..]);
        if (iova + size < iova)
        {
            return ErrorDetail.Fail(Errno.EINVAL, "GET_BITMAP: range wraps");
        }

        if (!AccessOk(bm.Data, bm.Size))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"GET_BITMAP: bitmap pointer 0x{bm.Data:x} is not a user address");
        }

        if (!VerifyBitmapSize(size >> PgShift(bm.Pgsize), bm.Size))
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"GET_BITMAP: bitmap size 0x{bm.Size:x} does not fit the range");
        }

        lock (_lock)
        {
            ulong pgsize = MinPageSize;
            if (bm.Pgsize != pgsize)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"GET_BITMAP: pgsize 0x{bm.Pgsize:x} is not 0x{pgsize:x}");
            }

            if ((iova & (pgsize - 1)) != 0 || size == 0 || (size & (pgsize - 1)) != 0)
            {
                return ErrorDetail.Fail(Errno.EINVAL, "GET_BITMAP: iova/size unaligned or size 0");
            }

            if (!DirtyTracking)
            {
                return ErrorDetail.Fail(Errno.EINVAL, "GET_BITMAP: dirty tracking is off");
            }

            return IovaDirtyBitmap(caller, bm.Data, iova, size, pgsize);
        }
    }

    [KernelSymbol("vfio_iova_dirty_bitmap")]
    private Errno IovaDirtyBitmap(ProcessAddressSpace caller, ulong bitmap, ulong iova, ulong size, ulong pgsize)
    {
        VfioDma? d = FindDma(iova, 1);
        if (d is not null && d.Iova != iova)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"GET_BITMAP: 0x{iova:x} bisects a mapping");
        }

        d = FindDma(iova + size - 1, 0);
        if (d is not null && d.Iova + d.Size != iova + size)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"GET_BITMAP: 0x{iova + size - 1:x} bisects a mapping");
        }

        foreach (VfioDma dma in _dmas)
        {
            if (dma.Iova < iova)
            {
                continue;
            }

            if (dma.Iova > iova + size - 1)
            {
                break;
            }

            Errno e = UpdateUserBitmap(caller, bitmap, iova, dma, pgsize);
            if (e != Errno.None)
            {
                return e;
            }
        }

        return Errno.None;
    }

    /// <summary>Copies one mapping's dirty bits into the user's bitmap at the mapping's bit offset from <paramref name="baseIova"/>.</summary>
    /// <remarks>
    /// This is the kernel's behaviour (5.15 and 6.1 alike, <c>update_user_bitmap</c>), quirks included:
    /// <list type="bullet">
    /// <item>When the mapping's bits start at a non-zero bit offset <c>shift</c> inside a 64-bit word, the
    /// per-mapping bitmap is shifted left in place, then the user's <em>whole</em> first word (all 64 bits,
    /// read with <c>copy_from_user</c>) is ORed into it: <c>bitmap_or(..., shift)</c> works on whole longs, so
    /// user bits above <c>shift</c> are not masked off and come back set.</item>
    /// <item>Whole 64-bit words are copied back (<c>DIRTY_BITMAP_BYTES(nbits + shift)</c>): the words after the
    /// first are overwritten, not merged, and the bits after the mapping in its last word take the per-mapping
    /// bitmap's bits there (normally zero, or stale bits, below). Words of the user's bitmap the mapping does
    /// not reach are not written.</item>
    /// <item>The caller then clears only the mapping's own <c>nbits</c> bits, so bits the shift and the OR put
    /// above them survive in the per-mapping bitmap and reappear in later queries (the stale-bit bug).</item>
    /// </list>
    /// </remarks>
    [KernelSymbol("update_user_bitmap")]
    private Errno UpdateUserBitmap(ProcessAddressSpace caller, ulong userBitmap, ulong baseIova, VfioDma dma, ulong pgsize)
    {
        ulong nbits = dma.Size / pgsize;
        ulong[] bm = dma.Bitmap ??= new ulong[((nbits + 63) / 64) + 1];
        if (_numNonPinnedGroups > 0 && dma.IommuMapped)
        {
            SetBits(bm, 0, nbits);
        }

        ulong bitOffset = (dma.Iova - baseIova) / pgsize;
        ulong word = bitOffset / 64;
        int shift = (int)(bitOffset % 64);
        Span<byte> tmp = stackalloc byte[8];
        if (shift != 0)
        {
            ShiftLeft(bm, shift, nbits + (ulong)shift);
            if (caller.Read(userBitmap + (word * 8), tmp) != Errno.None || userBitmap == 0)
            {
                return ErrorDetail.Fail(Errno.EFAULT, "dirty bitmap: user bitmap not readable");
            }

            // bitmap_or(dma->bitmap, dma->bitmap, &leftover, shift): BITS_TO_LONGS(shift) = 1 whole word, unmasked.
            bm[0] |= BinaryPrimitives.ReadUInt64LittleEndian(tmp);
        }

        ulong words = (nbits + (ulong)shift + 63) / 64;
        for (ulong w = 0; w < words; w++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(tmp, bm[w]);
            if (userBitmap == 0 || caller.Write(userBitmap + ((word + w) * 8), tmp) != Errno.None)
            {
                return ErrorDetail.Fail(Errno.EFAULT, "dirty bitmap: user bitmap not writable");
            }
        }

        ClearBits(bm, 0, nbits);
        foreach (VfioPfn p in dma.PfnList.Values)
        {
            SetBits(bm, (p.Iova - dma.Iova) / pgsize, 1);
        }

        return Errno.None;
    }

    // __bitmap_shift_left(dst == src, shift, nbits): words beyond BITS_TO_LONGS(nbits) are untouched, nothing is masked.
    private static void ShiftLeft(ulong[] bm, int shift, ulong nbits)
    {
        int lim = (int)((nbits + 63) / 64);
        int off = shift / 64, rem = shift % 64;
        for (int k = lim - off - 1; k >= 0; k--)
        {
            ulong lower = rem != 0 && k > 0 ? bm[k - 1] >> (64 - rem) : 0;
            ulong upper = bm[k] << rem;
            bm[k + off] = lower | upper;
        }

        for (int k = 0; k < off; k++)
        {
            bm[k] = 0;
        }
    }

    private static void SetBits(ulong[] bm, ulong start, ulong count)
    {
        for (ulong b = start; b < start + count; b++)
        {
            bm[b >> 6] |= 1UL << (int)(b & 63);
        }
    }

    private static void ClearBits(ulong[] bm, ulong start, ulong count)
    {
        for (ulong b = start; b < start + count; b++)
        {
            bm[b >> 6] &= ~(1UL << (int)(b & 63));
        }
    }

    [KernelSymbol("vfio_dma_bitmap_alloc")]
    private Errno AllocBitmap(VfioDma dma)
    {
        ulong pgsize = MinPageSize;
        ulong npages = dma.Size / pgsize;
        if (npages > VfioUapi.DirtyBitmapPagesMax)
        {
            return ErrorDetail.Fail(Errno.EINVAL, "dirty bitmap: mapping has more than INT_MAX pages");
        }

        dma.Bitmap = new ulong[((npages + 63) / 64) + 1];
        foreach (VfioPfn p in dma.PfnList.Values)
        {
            SetBits(dma.Bitmap, (p.Iova - dma.Iova) / pgsize, 1);
        }

        return Errno.None;
    }
}
