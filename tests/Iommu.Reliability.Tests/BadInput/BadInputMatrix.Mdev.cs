using Iommu.Reliability.Tests.Infrastructure;
using Vfio.Mdev;
using static Iommu.Reliability.Tests.BadInput.Rows;

namespace Iommu.Reliability.Tests.BadInput;

internal static partial class BadInputMatrix
{
    /// <summary>Vfio.Mdev: the mdev core (parents, create/remove by UUID text), devices, device files, types.</summary>
    private static IEnumerable<BadInputRow> Mdev() =>
    [
        X<ArgumentNullException>("MdevCore..ctor", "null platform", _ => new MdevCore(null!)),
        V("MdevCore..ctor", "second mdev core on one platform: an independent core on its own bus", c => { _ = c.Mdev; return new MdevCore(c.Platform).Bus.Name; }, "mdev1"),
        X<ArgumentNullException>("MdevCore.FindParent", "null", c => c.Mdev.FindParent(null!)),
        V("MdevCore.FindParent", "device that is no parent", c => c.Mdev.FindParent(c.Dev), null),
        V("MdevCore.FindDevice", "empty UUID", c => c.Mdev.FindDevice(Guid.Empty), null),
        X<ArgumentNullException>("MdevCore.RegisterDevice", "null parent device", c => c.Mdev.RegisterDevice(null!, c.Mtty)),
        E("MdevCore.RegisterDevice", "null ops", c => c.Mdev.RegisterDevice(c.Dev, null), Errno.EINVAL),
        E("MdevCore.RegisterDevice", "parent registered twice", c => c.Mdev.RegisterDevice(c.Mtty.ParentDevice, c.Mtty), Errno.EEXIST),
        X<ArgumentNullException>("MdevCore.UnregisterDevice", "null", c => { c.Mdev.UnregisterDevice(null!); return null; }),
        Ok("MdevCore.UnregisterDevice", "device that is no parent (no-op)", c => c.Mdev.UnregisterDevice(c.Dev)),
        X<ArgumentNullException>("MdevCore.Create", "null parent", c => c.Mdev.Create(null!, "mtty-1", Guid.NewGuid(), out _)),
        X<ArgumentNullException>("MdevCore.Create", "null type name", c => c.Mdev.Create(c.Mtty.ParentDevice, null!, Guid.NewGuid(), out _)),
        E("MdevCore.Create", "unknown type", c => c.Mdev.Create(c.Mtty.ParentDevice, "mtty-9", Guid.NewGuid(), out _), Errno.ENOENT),
        E("MdevCore.Create", "device that is no parent", c => c.Mdev.Create(c.Dev, c.MttyType.Name, Guid.NewGuid(), out _), Errno.ENOENT),
        X<ArgumentNullException>("MdevCore.Create", "null UUID text", c => c.Mdev.Create(c.Mtty.ParentDevice, c.MttyType.Name, (string)null!, out _)),
        E("MdevCore.Create", "UUID text too short", c => c.Mdev.Create(c.Mtty.ParentDevice, c.MttyType.Name, "1234", out _), Errno.EINVAL),
        E("MdevCore.Create", "UUID text of 36 non-hex bytes", c => c.Mdev.Create(c.Mtty.ParentDevice, c.MttyType.Name, new string('z', 36), out _), Errno.EINVAL),
        E("MdevCore.Create", "UUID text of 38 bytes", c => c.Mdev.Create(c.Mtty.ParentDevice, c.MttyType.Name, Guid.NewGuid() + "\n\n", out _), Errno.EINVAL),
        E("MdevCore.Create", "duplicate UUID", c =>
        {
            var id = Guid.NewGuid();
            c.Mdev.Create(c.MttyType, id, out _).ThrowIfError();
            return c.Mdev.Create(c.MttyType, id, out _);
        }, Errno.EEXIST),
        X<ArgumentNullException>("MdevCore.Create", "null type", c => c.Mdev.Create((MdevType)null!, Guid.NewGuid(), out _)),
        X<ArgumentNullException>("MdevCore.Remove", "null mdev", c => c.Mdev.Remove(null!)),
        E("MdevCore.Remove", "removed twice", c =>
        {
            MdevDevice m = c.NewMdev();
            c.Mdev.Remove(m).ThrowIfError();
            return c.Mdev.Remove(m);
        }, Errno.ENODEV),
        E("MdevCore.Remove", "remove text not a number", c => c.Mdev.Remove(c.NewMdev(), "yes"), Errno.EINVAL),
        E("MdevCore.Remove", "remove text 0 does nothing", c => c.Mdev.Remove(c.NewMdev(), "0"), Errno.None),
        X<ArgumentNullException>("MdevCore.Remove", "null remove text", c => c.Mdev.Remove(c.NewMdev(), null!)),

        V("MdevDevice.FromDevice", "null", _ => MdevDevice.FromDevice(null), null),
        V("MdevDevice.FromDevice", "a PCI device", c => MdevDevice.FromDevice(c.Dev), null),
        Ok("MdevDevice.SetDrvdata", "null", c => c.NewMdev().SetDrvdata(null)),
        Ok("MdevDevice.SetIommuDevice", "null clears it", c => c.NewMdev().SetIommuDevice(null)),
        Ok("MdevDevice.SetIommuDomain", "null clears it", c => c.NewMdev().SetIommuDomain(null)),
        E("MdevDevice.Open", "after removal", c =>
        {
            MdevDevice m = c.NewMdev();
            c.Mdev.Remove(m).ThrowIfError();
            return m.Open(out _);
        }, Errno.ENODEV),

        V("MdevDeviceFile.Read", "negative offset", c => { c.NewMdev().Open(out MdevDeviceFile? f).ThrowIfError(); return f!.Read(new byte[4], -1); }, (long)-(int)Errno.EINVAL),
        V("MdevDeviceFile.Write", "config space past 256 bytes", c => { c.NewMdev().Open(out MdevDeviceFile? f).ThrowIfError(); return f!.Write(new byte[8], 252); }, (long)-(int)Errno.EINVAL),
        V("MdevDeviceFile.Ioctl", "unknown request (vendor answers)", c => { c.NewMdev().Open(out MdevDeviceFile? f).ThrowIfError(); return f!.Ioctl(0xdead, []); }, (long)-(int)Errno.ENOTTY),
        X<ObjectDisposedException>("MdevDeviceFile.Ioctl", "after Dispose", c => { c.NewMdev().Open(out MdevDeviceFile? f).ThrowIfError(); f!.Dispose(); return f.Ioctl(0, []); }),
        X<ObjectDisposedException>("MdevDeviceFile.Read", "after Dispose", c => { c.NewMdev().Open(out MdevDeviceFile? f).ThrowIfError(); f!.Dispose(); return f.Read(new byte[4], 0); }),
        X<ArgumentNullException>("MdevDeviceFile.Mmap", "null area", c => { c.NewMdev().Open(out MdevDeviceFile? f).ThrowIfError(); return f!.Mmap(null!); }),

        V("MdevParent.FindType", "null", c => c.MttyParent.FindType(null!), null),
        V("MdevParent.FindType", "unknown name", c => c.MttyParent.FindType("nope"), null),
        E("MdevType.ReadAttribute", "write-only create", c => c.MttyType.ReadAttribute("create", out _), Errno.EACCES),
        E("MdevType.ReadAttribute", "no such file", c => c.MttyType.ReadAttribute("../../etc/passwd", out _), Errno.ENOENT),
        X<ArgumentNullException>("MdevType.ReadAttribute", "null name", c => c.MttyType.ReadAttribute(null!, out _)),
        X<ArgumentNullException>("MdevTypeGroup..ctor", "null attributes", _ => new MdevTypeGroup("g", null!)),
        X<ArgumentNullException>("MdevTypeGroup.Conventional", "null availability callback", _ => MdevTypeGroup.Conventional("g", null!, "vfio-pci")),
        Ok("MdevTypeGroup.Conventional", "null group name is accepted here (MdevCore.RegisterDevice refuses it with EINVAL)", _ => MdevTypeGroup.Conventional(null!, _ => 1, "vfio-pci")),
        V("VmArea..ctor", "length 0 (a descriptor: the mmap path validates, the vendor decides)", _ => new VmArea(0x1000, 0, 0, false).Length, 0UL),
        Ok("VmArea.RemapPfnRange", "any pfn is recorded", _ => new VmArea(0x1000, 0x1000, 0, false).RemapPfnRange(ulong.MaxValue)),
    ];
}
