using Iommu.Devices;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Uacce;
using static Iommu.Reliability.Tests.BadInput.Rows;

namespace Iommu.Reliability.Tests.BadInput;

internal static partial class BadInputMatrix
{
    /// <summary>Uacce: the framework (alloc/register/remove/open), devices (sysfs), queue files (ioctl/mmap) and mmap areas.</summary>
    private static IEnumerable<BadInputRow> UacceRows() =>
    [
        X<ArgumentNullException>("UacceCore..ctor", "null platform", _ => new UacceCore(null!)),
        X<ArgumentNullException>("UacceCore.Alloc", "null parent", c => c.Uacce.Alloc(null!, new UacceInterface("x", UacceDeviceFlags.None, c.UacceOps), out _)),
        X<ArgumentNullException>("UacceCore.Alloc", "null interface", c => c.Uacce.Alloc(c.Dev2, null!, out _)),
        X<ArgumentNullException>("UacceCore.Alloc", "null ops", c => c.Uacce.Alloc(c.Dev2, new UacceInterface("x", UacceDeviceFlags.None, null!), out _)),
        X<ArgumentException>("UacceCore.Alloc", "empty name", c => c.Uacce.Alloc(c.Dev2, new UacceInterface("", UacceDeviceFlags.None, c.UacceOps), out _)),
        X<ArgumentException>("UacceCore.Alloc", "name of UACCE_MAX_NAME_SIZE characters", c => c.Uacce.Alloc(c.Dev2, new UacceInterface(new string('a', 64), UacceDeviceFlags.None, c.UacceOps), out _)),
        V("UacceCore.Alloc", "SVA requested on a device without PRI: allocated without SVA", c =>
        {
            c.Uacce.Alloc(c.Dev2, new UacceInterface("x", UacceDeviceFlags.Sva, c.UacceOps), out UacceDevice? d).ThrowIfError();
            return d!.Flags;
        }, UacceDeviceFlags.None),
        E("UacceCore.Register", "null (uacce_register(NULL))", c => c.Uacce.Register(null), Errno.ENODEV),
        E("UacceCore.Register", "registered twice", c => c.Uacce.Register(c.UacceDev), Errno.EEXIST),
        E("UacceCore.Register", "after remove", c => { UacceDevice d = c.UacceDev; c.Uacce.Remove(d); return c.Uacce.Register(d); }, Errno.ENODEV),
        X<ArgumentException>("UacceCore.Register", "device of another core", c => { UacceDevice d = c.UacceDev; return new UacceCore(c.Platform).Register(d); }),
        Ok("UacceCore.Remove", "null (ignored)", c => c.Uacce.Remove(null)),
        Ok("UacceCore.Remove", "removed twice", c => { c.Uacce.Remove(c.UacceDev); c.Uacce.Remove(c.UacceDev); }),
        X<ArgumentException>("UacceCore.Remove", "device of another core", c => { UacceDevice d = c.UacceDev; new UacceCore(c.Platform).Remove(d); }),
        X<ArgumentNullException>("UacceCore.Open", "null name", c => c.Uacce.Open((string)null!, c.Proc, out _)),
        X<ArgumentNullException>("UacceCore.Open", "null device", c => c.Uacce.Open((UacceDevice)null!, c.Proc, out _)),
        X<ArgumentNullException>("UacceCore.Open", "null process", c => c.Uacce.Open(c.UacceDev, null!, out _)),
        E("UacceCore.Open", "unknown name", c => c.Uacce.Open("nope-0", c.Proc, out _), Errno.ENODEV),
        E("UacceCore.Open", "device never registered", c =>
        {
            c.Uacce.Alloc(c.Dev2, new UacceInterface("x", UacceDeviceFlags.None, c.UacceOps), out UacceDevice? d).ThrowIfError();
            return c.Uacce.Open(d!, c.Proc, out _);
        }, Errno.ENODEV),
        E("UacceCore.Open", "device removed (parent == NULL)", c => { UacceDevice d = c.UacceDev; c.Uacce.Remove(d); return c.Uacce.Open(d, c.Proc, out _); }, Errno.EINVAL),
        X<InvalidOperationException>("UacceCore.Open", "exited process", c => { UacceDevice d = c.UacceDev; c.Proc.Exit(); return c.Uacce.Open(d, c.Proc, out _); }),

        X<ArgumentOutOfRangeException>("UacceDevice.SetRegionPageCount", "region type 2", c => c.UacceDev.SetRegionPageCount((UacceQueueFileRegionType)2, 1)),
        X<ArgumentOutOfRangeException>("UacceDevice.SetRegionPageCount", "negative pages", c => c.UacceDev.SetRegionPageCount(UacceQueueFileRegionType.Dus, -1)),
        X<ArgumentNullException>("UacceDevice.ReadAttribute", "null", c => c.UacceDev.ReadAttribute(null!, out _)),
        E("UacceDevice.ReadAttribute", "unknown attribute", c => c.UacceDev.ReadAttribute("../api", out _), Errno.ENOENT),
        E("UacceDevice.ReadAttribute", "hidden region size (0 pages)", c => c.UacceDev.ReadAttribute("region_dus_size", out _), Errno.ENOENT),
        E("UacceDevice.ReadAttribute", "available_instances without the op", c => c.UacceDev.ReadAttribute("available_instances", out _), Errno.ENODEV),

        E("UacceQueue.Ioctl", "unknown command without a driver ioctl", c => c.UacceQueue().Ioctl(0xFFFF_FFFF, new byte[3]), Errno.EINVAL),
        E("UacceQueue.Ioctl", "START_Q twice", c => { UacceQueue q = c.UacceQueue(); q.Ioctl(UacceCommands.StartQ, default).ThrowIfError(); return q.Ioctl(UacceCommands.StartQ, default); }, Errno.EINVAL),
        E("UacceQueue.Ioctl", "zombie queue (after PUT_Q)", c => { UacceQueue q = c.UacceQueue(); q.Ioctl(UacceCommands.PutQ, default).ThrowIfError(); return q.Ioctl(UacceCommands.PutQ, default); }, Errno.ENXIO),
        X<ArgumentNullException>("UacceQueue.Mmap", "null process", c => c.UacceQueue().Mmap(null!, 0, 4096, out _)),
        E("UacceQueue.Mmap", "page offset 2", c => c.UacceQueue().Mmap(c.Proc, 2, 4096, out _), Errno.EINVAL),
        E("UacceQueue.Mmap", "page offset 2^64-1", c => c.UacceQueue().Mmap(c.Proc, ulong.MaxValue, 4096, out _), Errno.EINVAL),
        E("UacceQueue.Mmap", "zero length", c => c.UacceQueue().Mmap(c.Proc, 0, 0, out _), Errno.EINVAL),
        E("UacceQueue.Mmap", "length 2^64-1", c => c.UacceQueue().Mmap(c.Proc, 0, ulong.MaxValue, out _), Errno.ENOMEM), // do_mmap: PAGE_ALIGN overflows
        E("UacceQueue.Mmap", "region mapped twice", c => { UacceQueue q = c.UacceQueue(); q.Mmap(c.Proc, 1, 4096, out _).ThrowIfError(); return q.Mmap(c.Proc, 1, 4096, out _); }, Errno.EEXIST),
        X<InvalidOperationException>("UacceQueue.Mmap", "exited process", c => { UacceQueue q = c.UacceQueue(); using var other = new ProcessAddressSpace(c.Pages, "gone"); other.Exit(); return q.Mmap(other, 0, 4096, out _); }),

        X<ArgumentException>("UacceVmArea.RemapPfnRange", "unaligned physical address", c =>
        {
            c.UacceQueue().Mmap(c.Proc, 0, 4096, out _).ThrowIfError();
            c.UacceOps.LastVma!.RemapPfnRange(0x1001);
        }),
    ];
}
