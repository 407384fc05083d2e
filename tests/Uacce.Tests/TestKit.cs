using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using UacceAccel;

namespace Uacce.Tests;

internal static class TestKit
{
    public const ulong Page = 4096;

    // Word 0 of the PASID-table entry the unit reads for (device, pasid), or null when the walk to it is not present.
    public static ulong? PasidEntryQ0(AccelSystem sys, PciDevice dev, uint pasid)
    {
        Iommu.Memory.PhysicalMemory m = sys.Platform.Memory;
        ulong root = sys.Unit.Read64(0x20) & ~0xFFFUL;
        ulong re = m.ReadUInt64(root + (dev.BusNumber * 16UL) + (dev.DevFn >= 128 ? 8UL : 0));
        if ((re & 1) == 0)
        {
            return null;
        }

        ulong c0 = m.ReadUInt64((re & ~0xFFFUL) + ((dev.DevFn & 0x7FUL) * 32));
        if ((c0 & 1) == 0)
        {
            return null;
        }

        ulong pde = m.ReadUInt64((c0 & ~0xFFFUL) + ((pasid >> 6) * 8UL));
        return (pde & 1) == 0 ? null : m.ReadUInt64((pde & ~0xFFFUL) + ((pasid & 63UL) * 64));
    }

    // An untranslated 8-byte device read with the PASID: whether the process's page is reachable.
    public static bool DmaReaches(PciDevice dev, uint pasid, ulong va)
    {
        Span<byte> b = stackalloc byte[8];
        return dev.DmaRead(pasid, va, b).IsOk;
    }

    public static UacceQueue Queue(ProcessAddressSpace mm, int fd) => (UacceQueue)mm.GetFile(fd)!;

    public static (UacceQueue Q, int Fd) OpenQueue(AccelSystem sys, ProcessAddressSpace mm)
    {
        Assert.Equal(Errno.None, sys.Uacce.Open(sys.Accel.Name, mm, out int fd));
        return (Queue(mm, fd), fd);
    }
}
