using Iommu;
using Vfio.Mdev.Tests.Infrastructure;

namespace Vfio.Mdev.Tests;

public sealed class DeviceFileTests
{
    private static (MdevBed Bed, MinimalFakeVendor Vendor, MdevDevice Mdev) Setup(bool minimal = false)
    {
        var bed = new MdevBed();
        MinimalFakeVendor v = minimal ? new MinimalFakeVendor("a") : new FakeVendor("a");
        Assert.Equal(Errno.None, bed.Mdev.RegisterDevice(bed.ParentA, v));
        return (bed, v, bed.Create(bed.ParentA, "fake-a"));
    }

    [Fact]
    public void Operations_are_forwarded_to_the_vendor()
    {
        (MdevBed bed, MinimalFakeVendor v, MdevDevice m) = Setup();
        using (bed)
        {
            Assert.Equal(Errno.None, m.Open(out MdevDeviceFile? f));
            using (f)
            {
                byte[] buf = new byte[4];
                Assert.Equal(4, f!.Read(buf, 0x10));
                Assert.Equal([0xab, 0xab, 0xab, 0xab], buf);
                Assert.Equal(2, f.Write(buf.AsSpan(0, 2), 0x20));
                Assert.Equal(7, f.Ioctl(0x3b6e, []));
                var vma = new VmArea(0x7f00_0000, 0x1000, 0, true);
                Assert.Equal(Errno.None, f.Mmap(vma));
                Assert.Equal(0x1234UL, vma.RemappedPfn);
            }

            Assert.Equal(["open_device", "read(4,16)", "write(2,32)", "ioctl(0x3b6e)", "mmap", "close_device"], v.Calls.Skip(1));
        }
    }

    [Fact]
    public void Missing_read_write_mmap_are_EINVAL_and_missing_ioctl_open_close_succeed()
    {
        (MdevBed bed, MinimalFakeVendor v, MdevDevice m) = Setup(minimal: true);
        using (bed)
        {
            Assert.Equal(Errno.None, m.Open(out MdevDeviceFile? f));
            using (f)
            {
                Assert.Equal(Errno.EINVAL.ToKernelReturn(), f!.Read(new byte[4], 0));
                Assert.Equal(Errno.EINVAL.ToKernelReturn(), f.Write(new byte[4], 0));
                Assert.Equal(Errno.EINVAL, f.Mmap(new VmArea(0, 0x1000, 0, false)));
                Assert.Equal(0, f.Ioctl(0x3b6e, []));
            }

            Assert.Single(v.Calls); // only create
        }
    }

    [Fact]
    public void Open_device_runs_for_the_first_open_and_close_device_for_the_last_close()
    {
        (MdevBed bed, MinimalFakeVendor v, MdevDevice m) = Setup();
        using (bed)
        {
            m.Open(out MdevDeviceFile? f1);
            m.Open(out MdevDeviceFile? f2);
            Assert.Equal(2, m.OpenCount);
            f1!.Dispose();
            f1.Dispose(); // closing twice is one close
            Assert.Equal(["open_device"], v.Calls.Skip(1));
            f2!.Dispose();
            Assert.Equal(["open_device", "close_device"], v.Calls.Skip(1));
            Assert.Equal(0, m.OpenCount);
            Assert.Throws<ObjectDisposedException>(() => f1.Read(new byte[1], 0));
        }
    }

    [Fact]
    public void Vendor_open_error_fails_the_open_and_a_later_open_retries()
    {
        (MdevBed bed, MinimalFakeVendor v, MdevDevice m) = Setup();
        using (bed)
        {
            v.OnOpen = _ => Errno.EBUSY;
            Assert.Equal(Errno.EBUSY, m.Open(out MdevDeviceFile? f));
            Assert.Null(f);
            Assert.Equal(0, m.OpenCount);
            v.OnOpen = _ => Errno.None;
            Assert.Equal(Errno.None, m.Open(out f));
            f!.Dispose();
            Assert.Equal(["open_device", "open_device", "close_device"], v.Calls.Skip(1));
        }
    }

    [Fact]
    public void Removed_device_cannot_be_opened()
    {
        (MdevBed bed, _, MdevDevice m) = Setup();
        using (bed)
        {
            bed.Mdev.Remove(m);
            Assert.Equal(Errno.ENODEV, m.Open(out _));
        }
    }

    [Fact]
    public void Removal_with_open_files_asks_the_vendor_to_request_a_close_and_waits_for_it()
    {
        (MdevBed bed, MinimalFakeVendor v, MdevDevice m) = Setup();
        using (bed)
        {
            m.Open(out MdevDeviceFile? f);
            v.OnRequest = (_, count) => f!.Dispose(); // user space honours the request
            Assert.Equal(Errno.None, bed.Mdev.Remove(m));
            Assert.Equal(["open_device", "request(0)", "close_device", $"remove({m.Uuid})"], v.Calls.Skip(1));
        }
    }
}
