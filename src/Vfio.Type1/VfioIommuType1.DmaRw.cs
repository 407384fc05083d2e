using System.Numerics;
using Iommu;
using Iommu.Domains;
using Iommu.Mm;

namespace Vfio.Type1;

public sealed partial class VfioIommuType1
{
    /// <summary>
    /// <c>vfio_iommu_type1_dma_rw</c> (5.15): copies between a kernel buffer and the user memory behind
    /// IOVAs, chunk by chunk across mappings, through the mapping process's mm.
    /// </summary>
    /// <param name="caller">The calling task's process, or null for a kernel thread (which borrows the mapping's mm).</param>
    /// <param name="iova">First IOVA.</param>
    /// <param name="data">The kernel buffer.</param>
    /// <param name="write">True: copy <paramref name="data"/> to user memory.</param>
    /// <returns>0 or -errno.</returns>
    [KernelSymbol("vfio_iommu_type1_dma_rw")]
    internal int DmaRw(ProcessAddressSpace? caller, ulong iova, Span<byte> data, bool write)
    {
        lock (_lock)
        {
            while (!data.IsEmpty)
            {
                Errno e = DmaRwChunk(caller, iova, data, write, out int done);
                if (e != Errno.None)
                {
                    return -(int)e;
                }

                data = data[done..];
                iova += (ulong)done;
            }

            return 0;
        }
    }

    [KernelSymbol("vfio_iommu_type1_dma_rw_chunk")]
    private Errno DmaRwChunk(ProcessAddressSpace? caller, ulong iova, Span<byte> data, bool write, out int copied)
    {
        copied = 0;

        // vfio_find_dma_valid: wait while the mapping's vaddr is invalidated.
        VfioDma? dma;
        while (true)
        {
            dma = FindDma(iova, 1);
            if (dma is null)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"vfio_dma_rw: no mapping at 0x{iova:x}");
            }

            if (!dma.VaddrInvalid)
            {
                break;
            }

            Monitor.Wait(_lock);
            if (!_containerOpen || _released)
            {
                return ErrorDetail.Fail(Errno.EFAULT, "vfio_dma_rw: container closed while waiting for a vaddr update");
            }
        }

        if ((write && (dma.Prot & IommuProt.Write) == 0) || (dma.Prot & IommuProt.Read) == 0)
        {
            return ErrorDetail.Fail(Errno.EPERM, $"vfio_dma_rw: mapping 0x{dma.Iova:x} is {dma.Prot}");
        }

        if (dma.Task.Exited)
        {
            return ErrorDetail.Fail(Errno.EPERM, "vfio_dma_rw: the mapping's process has exited");
        }

        if (caller is not null && !ReferenceEquals(caller, dma.Task))
        {
            return ErrorDetail.Fail(Errno.EFAULT, "vfio_dma_rw: caller is neither a kernel thread nor in the mapping's process");
        }

        ulong offset = iova - dma.Iova;
        int count = (int)Math.Min((ulong)data.Length, dma.Size - offset);
        ulong vaddr = dma.Vaddr + offset;
        Span<byte> chunk = data[..count];
        Errno e = write ? dma.Task.Write(vaddr, chunk) : dma.Task.Read(vaddr, chunk);
        if (e != Errno.None)
        {
            return ErrorDetail.Fail(Errno.EFAULT, $"vfio_dma_rw: copy {(write ? "to" : "from")} 0x{vaddr:x} faulted");
        }

        copied = count;
        if (write && DirtyTracking && dma.Bitmap is not null)
        {
            int pgshift = BitOperations.TrailingZeroCount(MinPageSize);
            ulong first = offset >> pgshift, last = (offset + (ulong)count - 1) >> pgshift;
            SetBits(dma.Bitmap, first, last - first + 1);
        }

        return Errno.None;
    }
}
