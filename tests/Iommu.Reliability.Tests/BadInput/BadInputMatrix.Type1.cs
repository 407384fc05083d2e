using Iommu.Domains;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Vfio.Mdev.Pinning;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using static Iommu.Reliability.Tests.BadInput.Rows;

namespace Iommu.Reliability.Tests.BadInput;

internal static partial class BadInputMatrix
{
    /// <summary>Vfio.Type1: the VFIO core, container, group, backend, the process and host page models, the uAPI structs.</summary>
    private static IEnumerable<BadInputRow> Type1() =>
    [
        // VfioCore
        X<ArgumentNullException>("VfioCore..ctor", "null platform", _ => new VfioCore(null!)),
        X<ArgumentNullException>("VfioCore.RegisterDevice", "null", c => c.Vfio.RegisterDevice(null!)),
        E("VfioCore.RegisterDevice", "device without an IOMMU group", c => c.Vfio.RegisterDevice(c.Orphan), Errno.EINVAL),
        X<ArgumentNullException>("VfioCore.SetForeignDriver", "null", c => { c.Vfio.SetForeignDriver(null!, true); return null; }),
        X<ArgumentNullException>("VfioCore.GetGroup", "null", c => c.Vfio.GetGroup(null!)),
        V("VfioCore.GetGroup", "group with no VFIO device", c => c.Vfio.GetGroup(c.Dev.IommuGroup!), null),
        X<ArgumentNullException>("VfioCore.OpenContainer", "null process", c => c.Vfio.OpenContainer(null!, out _)),
        X<ArgumentNullException>("VfioCore.OpenGroup", "null process", c => c.Vfio.OpenGroup(null!, 0, out _, out _)),
        E("VfioCore.OpenGroup", "no such group", c => c.Vfio.OpenGroup(c.Proc, 4242, out _, out _), Errno.ENOENT),
        E("VfioCore.OpenGroup", "negative id", c => c.Vfio.OpenGroup(c.Proc, -1, out _, out _), Errno.ENOENT),
        E("VfioCore.OpenGroup", "second open", c => { _ = c.Group(); return c.Vfio.OpenGroup(c.Proc, c.Dev.IommuGroup!.Id, out _, out _); }, Errno.EBUSY),
        V("VfioCore.PinPages", "null user pfn array", c => c.Vfio.PinPages(c.Dev, null!, 1, IommuProt.Read, new ulong[1]), -(int)Errno.EINVAL),
        V("VfioCore.PinPages", "npage 0", c => c.Vfio.PinPages(c.Dev, new ulong[1], 0, IommuProt.Read, new ulong[1]), -(int)Errno.EINVAL),
        V("VfioCore.PinPages", "npage 513", c => c.Vfio.PinPages(c.Dev, new ulong[513], 513, IommuProt.Read, new ulong[513]), -(int)Errno.E2BIG),
        V("VfioCore.PinPages", "npage larger than the arrays", c => { _ = c.Container(); return c.Vfio.PinPages(c.Dev, new ulong[1], 4, IommuProt.Read, new ulong[1]); }, -(int)Errno.EINVAL),
        V("VfioCore.PinPages", "device without a VFIO group", c => c.Vfio.PinPages(c.Dev, new ulong[1], 1, IommuProt.Read, new ulong[1]), -(int)Errno.ENODEV),
        X<ArgumentNullException>("VfioCore.PinPages", "null device", c => c.Vfio.PinPages(null!, new ulong[1], 1, IommuProt.Read, new ulong[1])),
        V("VfioCore.UnpinPages", "negative npage", c => c.Vfio.UnpinPages(c.Dev, new ulong[1], -1), -(int)Errno.ENODEV), // 5.15: !npage only, then the group look-up
        V("VfioCore.UnpinPages", "negative npage in a container", c => { _ = c.Container(); return c.Vfio.UnpinPages(c.Dev, new ulong[1], -1); }, -(int)Errno.EINVAL),
        V("VfioCore.UnpinPages", "npage larger than the array", c => { _ = c.Container(); return c.Vfio.UnpinPages(c.Dev, new ulong[1], 2); }, -(int)Errno.EINVAL),
        V("VfioCore.UnpinPages", "group not in a container", c => { _ = c.Group(); return c.Vfio.UnpinPages(c.Dev, new ulong[1], 1); }, -(int)Errno.EINVAL),
        E("VfioCore.RegisterNotifier", "no events", c => c.Vfio.RegisterNotifier(c.Dev, VfioNotifyType.Iommu, VfioIommuNotifyEvents.None, (_, _) => 0), Errno.EINVAL),
        E("VfioCore.RegisterNotifier", "null notifier", c => c.Vfio.RegisterNotifier(c.Dev, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, null!), Errno.EINVAL),
        E("VfioCore.RegisterNotifier", "unknown event bits", c => { _ = c.Container(); return c.Vfio.RegisterNotifier(c.Dev, VfioNotifyType.Iommu, (VfioIommuNotifyEvents)0x6, (_, _) => 0); }, Errno.EINVAL),
        E("VfioCore.UnregisterNotifier", "null notifier", c => c.Vfio.UnregisterNotifier(c.Dev, VfioNotifyType.Iommu, null!), Errno.EINVAL),
        V("VfioCore.DmaRw", "empty buffer", c => c.Vfio.DmaRw(c.Dev, 0x1000, [], write: false), -(int)Errno.EINVAL),
        V("VfioCore.DmaRw", "no backend", c => { _ = c.Group(); return c.Vfio.DmaRw(c.Dev, 0x1000, new byte[8], write: false); }, -(int)Errno.EINVAL),
        V("VfioCore.DmaRw", "IOVA with no mapping", c => { _ = c.Container(); return c.Vfio.DmaRw(c.Dev, 0x1000, new byte[8], write: true); }, -(int)Errno.EINVAL),

        // VfioContainer
        X<ArgumentNullException>("VfioContainer.Ioctl", "null caller", c => c.Container().Ioctl(null!, VfioUapi.VFIO_GET_API_VERSION, [])),
        V("VfioContainer.Ioctl", "MAP before SET_IOMMU", c => c.Vfio.OpenContainer(c.Proc, out _).Ioctl(VfioUapi.VFIO_IOMMU_MAP_DMA, new byte[32]), -(int)Errno.EINVAL),
        V("VfioContainer.Ioctl", "unknown request with a backend", c => c.Container().Ioctl(0xffff_ffff, []), -(int)Errno.ENOTTY),
        V("VfioContainer.CheckExtension", "negative extension", c => c.Vfio.OpenContainer(c.Proc, out _).CheckExtension(-1), 0),
        V("VfioContainer.CheckExtension", "extension 2^40", c => c.Container().CheckExtension(1L << 40), 0),
        E("VfioContainer.SetIommu", "no group", c => c.Vfio.OpenContainer(c.Proc, out _).SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU), Errno.EINVAL),
        E("VfioContainer.SetIommu", "unknown type", c =>
        {
            VfioContainer k = c.Vfio.OpenContainer(c.Proc, out _);
            c.Group().SetContainer(k).ThrowIfError();
            return k.SetIommu(long.MinValue);
        }, Errno.ENODEV),
        E("VfioContainer.SetIommu", "backend already set", c => c.Container().SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU), Errno.EINVAL),
        E("VfioContainer.MapDma", "argsz 0", c => c.Container().MapDma(new VfioIommuType1DmaMap(0, 3, 0x1000, 0, 4096)), Errno.EINVAL),
        E("VfioContainer.MapDma", "unknown flag bit", c => c.Container().MapDma(new VfioIommuType1DmaMap(32, 0x8003, 0x1000, 0, 4096)), Errno.EINVAL),
        E("VfioContainer.MapDma", "size 0", c => c.Container().MapDma(new VfioIommuType1DmaMap(32, 3, 0x1000, 0, 0)), Errno.EINVAL),
        E("VfioContainer.MapDma", "unaligned vaddr", c => c.Container().MapDma(new VfioIommuType1DmaMap(32, 3, 0x1001, 0, 4096)), Errno.EINVAL),
        E("VfioContainer.MapDma", "IOVA + size wraps", c => c.Container().MapDma(new VfioIommuType1DmaMap(32, 3, 0x1000, ulong.MaxValue - 0xfff, 0x2000)), Errno.EINVAL),
        E("VfioContainer.MapDma", "vaddr not mapped", c => c.Container().MapDma(new VfioIommuType1DmaMap(32, 3, 0x1000, 0, 4096)), Errno.EFAULT),
        E("VfioContainer.MapDma", "IOVA in the MSI window", c => c.Container().MapDma(new VfioIommuType1DmaMap(32, 3, c.Proc.Mmap(4096), 0xfee0_0000, 4096)), Errno.EINVAL),
        X<ArgumentNullException>("VfioContainer.MapDma", "null caller", c => c.Container().MapDma(null!, new VfioIommuType1DmaMap(32, 3, 0x1000, 0, 4096))),
        E("VfioContainer.UnmapDma", "size 0", c => { var u = new VfioIommuType1DmaUnmap(24, 0, 0, 0); return c.Container().UnmapDma(ref u); }, Errno.EINVAL),
        E("VfioContainer.UnmapDma", "ALL with a size", c => { var u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL, 0, 4096); return c.Container().UnmapDma(ref u); }, Errno.EINVAL),
        E("VfioContainer.UnmapDma", "dirty bitmap while not tracking", c => { var u = new VfioIommuType1DmaUnmap(48, 1, 0, 4096, new VfioBitmap(4096, 8, 0)); return c.Container().UnmapDma(ref u); }, Errno.EINVAL),
        E("VfioContainer.UnmapDma", "unaligned IOVA", c => { var u = new VfioIommuType1DmaUnmap(24, 0, 0x10, 4096); return c.Container().UnmapDma(ref u); }, Errno.EINVAL),
        E("VfioContainer.GetInfo", "buffer shorter than 16 bytes", c => c.Container().GetInfo(new byte[8]), Errno.EFAULT),
        E("VfioContainer.GetInfo", "argsz 0", c => c.Container().GetInfo(new byte[24]), Errno.EINVAL),
        E("VfioContainer.DirtyPages", "no flag", c => c.Container().DirtyPages(0), Errno.EINVAL),
        E("VfioContainer.DirtyPages", "START|STOP", c => c.Container().DirtyPages(3), Errno.EINVAL),
        E("VfioContainer.GetDirtyBitmap", "tracking off", c => c.Container().GetDirtyBitmap(0, 4096, new VfioBitmap(4096, 8, 0)), Errno.EINVAL),
        E("VfioContainer.GetDirtyBitmap", "range wraps 2^64", c => c.Container().GetDirtyBitmap(ulong.MaxValue - 0xfff, 0x1000, new VfioBitmap(4096, 8, 0)), Errno.EINVAL),
        E("VfioContainer.GetDirtyBitmap", "bitmap in kernel space", c => c.Container().GetDirtyBitmap(0, 4096, new VfioBitmap(4096, 8, 0xffff_8880_0000_0000)), Errno.EINVAL),

        // VfioGroup
        X<ArgumentNullException>("VfioGroup.Ioctl", "null caller", c => c.Group().Ioctl(null!, VfioUapi.VFIO_GROUP_GET_STATUS, new byte[8])),
        V("VfioGroup.Ioctl", "container request on a group", c => c.Group().Ioctl(VfioUapi.VFIO_IOMMU_MAP_DMA, new byte[32]), -(int)Errno.ENOTTY),
        V("VfioGroup.Ioctl", "GET_STATUS, 4-byte buffer", c => c.Group().Ioctl(VfioUapi.VFIO_GROUP_GET_STATUS, new byte[4]), -(int)Errno.EFAULT),
        V("VfioGroup.Ioctl", "SET_CONTAINER, empty argument", c => c.Group().Ioctl(VfioUapi.VFIO_GROUP_SET_CONTAINER, []), -(int)Errno.EFAULT),
        X<InvalidOperationException>("VfioGroup.Ioctl", "group fd closed (no owner)", c => { VfioGroup g = c.Group(); g.Close().ThrowIfError(); return g.Ioctl(VfioUapi.VFIO_GROUP_GET_STATUS, new byte[8]); }),
        X<ArgumentNullException>("VfioGroup.SetContainer", "null container", c => c.Group().SetContainer(null!)),
        E("VfioGroup.SetContainer", "fd -1", c => c.Group().SetContainer(c.Proc, -1), Errno.EINVAL),
        E("VfioGroup.SetContainer", "fd not open", c => c.Group().SetContainer(c.Proc, 999), Errno.EBADF),
        E("VfioGroup.SetContainer", "fd of the group itself", c => { VfioGroup g = c.Group(); return g.SetContainer(c.Proc, g.Fd); }, Errno.EINVAL),
        X<ArgumentNullException>("VfioGroup.SetContainer", "null caller", c => c.Group().SetContainer(null!, 3)),
        E("VfioGroup.GetDeviceFd", "no container", c => c.Group().GetDeviceFd(c.Proc, "0000:00:01.0", out _, out _), Errno.EINVAL),
        E("VfioGroup.GetDeviceFd", "unknown name", c => { _ = c.Container(); return c.Vfio.GetGroup(c.Dev.IommuGroup!)!.GetDeviceFd(c.Proc, "0000:00:1f.7", out _, out _); }, Errno.ENODEV),
        E("VfioGroup.GetDeviceFd", "null name", c => { _ = c.Container(); return c.Vfio.GetGroup(c.Dev.IommuGroup!)!.GetDeviceFd(c.Proc, null!, out _, out _); }, Errno.ENODEV),
        X<ArgumentNullException>("VfioGroup.GetDeviceFd", "null caller", c => c.Group().GetDeviceFd(null!, "x", out _, out _)),

        // VfioIommuType1
        V("VfioIommuType1.CheckExtension", "extension -1", c => c.Container().Backend!.CheckExtension(-1), 0),
        X<ArgumentNullException>("VfioIommuType1.Ioctl", "null caller", c => c.Container().Backend!.Ioctl(null!, VfioUapi.VFIO_IOMMU_GET_INFO, new byte[16])),
        V("VfioIommuType1.Ioctl", "unknown request", c => c.Container().Backend!.Ioctl(c.Proc, VfioUapi.VFIO_GROUP_GET_STATUS, new byte[8]), -(int)Errno.ENOTTY),

        // uAPI structures
        X<ArgumentOutOfRangeException>("VfioIommuType1DmaMap.Write", "destination shorter than 32 bytes", _ => { new VfioIommuType1DmaMap(32, 3, 0, 0, 0).Write(new byte[16]); return null; }),
        X<ArgumentOutOfRangeException>("VfioIommuType1DmaUnmap.Write", "destination shorter than 24 bytes", _ => { new VfioIommuType1DmaUnmap(24, 0, 0, 0).Write(new byte[8]); return null; }),
        X<ArgumentOutOfRangeException>("VfioIommuType1Info.Read", "source shorter than 20 bytes", _ => VfioIommuType1Info.Read(new byte[12])),
    ];
}
