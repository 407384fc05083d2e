using Iommu;
using Vfio.Mdev.Tests.Infrastructure;

namespace Vfio.Mdev.Tests;

/// <summary>
/// A driver derived from <see cref="MdevParentOpsBase"/> writes create/remove and lists the optional-callback
/// interfaces it has; the others are absent exactly as a NULL op is, and as for a hand-written
/// <see cref="IMdevParentOps"/> without them.
/// </summary>
public sealed class MdevParentOpsBaseTests
{
    private sealed class Minimal : MdevParentOpsBase
    {
        public List<string> Calls { get; } = [];

        public override string DriverName => "minimal";

        public override IReadOnlyList<MdevTypeGroup> SupportedTypeGroups { get; } =
            [MdevTypeGroup.Conventional("a", _ => 1, "vfio-pci")];

        public override Errno Create(IMdevDevice mdev)
        {
            Calls.Add("create");
            return Errno.None;
        }

        public override Errno Remove(IMdevDevice mdev)
        {
            Calls.Add("remove");
            return Errno.None;
        }
    }

    private sealed class WithReadWriteAndClose : MdevParentOpsBase, IMdevReadWriteOps, IMdevOpenDeviceOps
    {
        public List<string> Calls { get; } = [];

        public override string DriverName => "readable";

        public override IReadOnlyList<MdevTypeGroup> SupportedTypeGroups { get; } =
            [MdevTypeGroup.Conventional("a", _ => 1, "vfio-pci")];

        public override Errno Create(IMdevDevice mdev) => Errno.None;

        public override Errno Remove(IMdevDevice mdev) => Errno.None;

        public long Read(IMdevDevice mdev, Span<byte> buffer, long offset)
        {
            Calls.Add($"read({buffer.Length},{offset})");
            buffer.Fill(0x5a);
            return buffer.Length;
        }

        // A read-only region: the driver refuses writes itself.
        public long Write(IMdevDevice mdev, ReadOnlySpan<byte> buffer, long offset) => Errno.EINVAL.ToKernelReturn();

        public Errno OpenDevice(IMdevDevice mdev) => Errno.None;

        public void CloseDevice(IMdevDevice mdev) => Calls.Add("close_device");
    }

    [Fact]
    public void Optional_callbacks_are_exactly_the_interfaces_the_driver_lists()
    {
        IMdevParentOps minimal = new Minimal();
        Assert.False(minimal is IMdevOpenDeviceOps or IMdevReadWriteOps or IMdevIoctlOps or IMdevMmapOps or IMdevRequestOps);
        IMdevParentOps readable = new WithReadWriteAndClose();
        Assert.True(readable is IMdevReadWriteOps and IMdevOpenDeviceOps);
        Assert.False(readable is IMdevIoctlOps or IMdevMmapOps or IMdevRequestOps);
    }

    [Fact]
    public void Absent_callbacks_behave_as_clear_bits_of_a_hand_written_driver()
    {
        using var bed = new MdevBed();
        var minimal = new Minimal();
        Assert.Equal(Errno.None, bed.Mdev.RegisterDevice(bed.ParentA, minimal));
        Assert.Equal(Errno.None, bed.Mdev.RegisterDevice(bed.ParentB, new MinimalFakeVendor("a")));

        foreach ((MdevDevice m, string name) in new[] { (bed.Create(bed.ParentA, "minimal-a"), "minimal"), (bed.Create(bed.ParentB, "fake-a"), "fake") })
        {
            Assert.Equal(Errno.None, m.Open(out MdevDeviceFile? f));
            using (f)
            {
                Assert.Equal(Errno.EINVAL.ToKernelReturn(), f!.Read(new byte[4], 0));
                Assert.Contains($"vendor driver {name} has no read", ErrorDetail.LastMessage, StringComparison.Ordinal);
                Assert.Equal(Errno.EINVAL.ToKernelReturn(), f.Write(new byte[4], 0));
                Assert.Equal(Errno.EINVAL, f.Mmap(new VmArea(0, 0x1000, 0, false)));
                Assert.Equal(0, f.Ioctl(0x3b6e, []));
            }

            Assert.Equal(Errno.None, bed.Mdev.Remove(m));
        }

        Assert.Equal(["create", "remove"], minimal.Calls);
    }

    [Fact]
    public void Listed_callbacks_are_called_and_the_others_stay_absent()
    {
        using var bed = new MdevBed();
        var driver = new WithReadWriteAndClose();
        Assert.Equal(Errno.None, bed.Mdev.RegisterDevice(bed.ParentA, driver));
        MdevDevice m = bed.Create(bed.ParentA, "readable-a");

        Assert.Equal(Errno.None, m.Open(out MdevDeviceFile? f));
        byte[] buf = new byte[3];
        Assert.Equal(3, f!.Read(buf, 0x40));
        Assert.Equal([0x5a, 0x5a, 0x5a], buf);
        Assert.Equal(Errno.EINVAL.ToKernelReturn(), f.Write(buf, 0));
        Assert.Equal(0, f.Ioctl(0x3b6e, []));
        Assert.Equal(Errno.EINVAL, f.Mmap(new VmArea(0, 0x1000, 0, false)));
        f.Dispose();

        Assert.Equal(["read(3,64)", "close_device"], driver.Calls);
    }
}
