using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Moq;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;

namespace Mtty.Tests;

/// <summary>The card's DMA through the VFIO pinning contract, with type1 played by a mock.</summary>
public sealed class MttyDmaPinningTests
{
    // The mock "type1" backs IOVA page N with host page N + 0x1000.
    private const ulong PfnOffset = 0x1000;

    private static (MttyBed Bed, MdevDevice Mdev, List<ulong[]> Pins, List<ulong[]> Unpins, Func<VfioIommuNotifier?> Notifier) Setup()
    {
        var bed = new MttyBed();
        MdevDevice m = bed.Create("mtty-1");
        var pins = new List<ulong[]>();
        var unpins = new List<ulong[]>();
        VfioIommuNotifier? notifier = null;
        bed.Pinning.Setup(p => p.RegisterNotifier(m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, It.IsAny<VfioIommuNotifier>()))
            .Callback((Device _, VfioNotifyType _, VfioIommuNotifyEvents _, VfioIommuNotifier nb) => notifier = nb)
            .Returns(Errno.None);
        bed.Pinning.Setup(p => p.UnregisterNotifier(m, VfioNotifyType.Iommu, It.IsAny<VfioIommuNotifier>()))
            .Returns(Errno.None);
        bed.Pinning.Setup(p => p.PinPages(m, It.IsAny<ulong[]>(), It.IsAny<int>(), It.IsAny<IommuProt>(), It.IsAny<ulong[]>()))
            .Returns((Device _, ulong[] user, int n, IommuProt _, ulong[] phys) =>
            {
                pins.Add(user[..n]);
                for (int i = 0; i < n; i++)
                {
                    phys[i] = user[i] + PfnOffset;
                }

                return n;
            });
        bed.Pinning.Setup(p => p.UnpinPages(m, It.IsAny<ulong[]>(), It.IsAny<int>()))
            .Returns((Device _, ulong[] user, int n) =>
            {
                unpins.Add(user[..n]);
                return n;
            });
        return (bed, m, pins, unpins, () => notifier);
    }

    private static ulong Host(ulong iova) => iova + (PfnOffset << 12);

    [Fact]
    public void Loopback_copies_guest_bytes_through_the_pinned_pages()
    {
        (MttyBed bed, MdevDevice m, List<ulong[]> pins, _, _) = Setup();
        using (bed)
        {
            byte[] data = Enumerable.Range(0, 0x1800).Select(i => (byte)(i * 7)).ToArray();
            bed.Platform.Memory.Write(Host(0x10_0800), data);
            Assert.Equal(Errno.None, m.Open(out MdevDeviceFile? f));
            using (f)
            {
                byte[] arg = new MttyDmaLoopback(0x10_0800, 0x20_0400, 0x1800).ToBytes();
                Assert.Equal(0x1800, f!.Ioctl(MttyDriver.IoctlDmaLoopback, arg));
            }

            byte[] copied = new byte[0x1800];
            bed.Platform.Memory.Read(Host(0x20_0400), copied);
            Assert.Equal(data, copied);
            Assert.Equal([0x100UL, 0x101], pins[0]); // source pages, read
            Assert.Equal([0x200UL, 0x201], pins[1]); // destination pages, read+write
            bed.Pinning.Verify(p => p.PinPages(m, It.IsAny<ulong[]>(), 2, IommuProt.Read, It.IsAny<ulong[]>()), Times.Once);
            bed.Pinning.Verify(p => p.PinPages(m, It.IsAny<ulong[]>(), 2, IommuProt.Read | IommuProt.Write, It.IsAny<ulong[]>()), Times.Once);
        }
    }

    [Fact]
    public void Pages_stay_pinned_until_the_dma_unmap_notifier_names_them()
    {
        (MttyBed bed, MdevDevice m, List<ulong[]> pins, List<ulong[]> unpins, Func<VfioIommuNotifier?> notifier) = Setup();
        using (bed)
        {
            m.Open(out MdevDeviceFile? f);
            using (f)
            {
                byte[] arg = new MttyDmaLoopback(0x10_0000, 0x20_0000, 0x1000).ToBytes();
                f!.Ioctl(MttyDriver.IoctlDmaLoopback, arg);
                f.Ioctl(MttyDriver.IoctlDmaLoopback, arg);
                Assert.Equal(2, pins.Count); // the second DMA reused the pins
                Assert.Equal([0x100UL, 0x200], MttyDriver.Card(m).PinnedPfns);

                Assert.Equal(NotifyResult.Ok, notifier()!(VfioIommuNotifyEvents.DmaUnmap, new VfioDmaUnmapEvent(0x20_0000, 0x1000)));
                Assert.Equal([0x200UL], Assert.Single(unpins));
                Assert.Equal([0x100UL], MttyDriver.Card(m).PinnedPfns);

                f.Ioctl(MttyDriver.IoctlDmaLoopback, arg);
                Assert.Equal([0x200UL], pins[^1]); // re-pinned after the unmap
            }

            // close_device: unpin what is left, then unregister the notifier.
            Assert.Equal(new ulong[] { 0x100, 0x200 }, unpins.Skip(1).SelectMany(u => u).Order().ToArray());
            Assert.Empty(MttyDriver.Card(m).PinnedPfns);
            bed.Pinning.Verify(p => p.UnregisterNotifier(m, VfioNotifyType.Iommu, notifier()!), Times.Once);
        }
    }

    [Fact]
    public void A_pin_error_is_returned_and_no_bytes_move()
    {
        (MttyBed bed, MdevDevice m, _, _, _) = Setup();
        using (bed)
        {
            bed.Pinning.Setup(p => p.PinPages(m, It.IsAny<ulong[]>(), It.IsAny<int>(), IommuProt.Read | IommuProt.Write, It.IsAny<ulong[]>()))
                .Returns(Errno.EPERM.ToKernelReturn()); // destination mapped read-only
            bed.Platform.Memory.Write(Host(0x10_0000), [1, 2, 3, 4]);
            m.Open(out MdevDeviceFile? f);
            using (f)
            {
                Assert.Equal(Errno.EPERM.ToKernelReturn(), f!.Ioctl(MttyDriver.IoctlDmaLoopback, new MttyDmaLoopback(0x10_0000, 0x20_0000, 4).ToBytes()));
            }

            byte[] dst = new byte[4];
            bed.Platform.Memory.Read(Host(0x20_0000), dst);
            Assert.Equal(new byte[4], dst);
        }
    }

    [Fact]
    public void Open_fails_with_the_notifier_registration_error()
    {
        using var bed = new MttyBed();
        MdevDevice m = bed.Create("mtty-1");
        bed.Pinning.Setup(p => p.RegisterNotifier(m, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, It.IsAny<VfioIommuNotifier>()))
            .Returns(Errno.EINVAL); // e.g. the group is not in a container
        Assert.Equal(Errno.EINVAL, m.Open(out MdevDeviceFile? f));
        Assert.Null(f);
    }

    [Fact]
    public void Dma_without_a_pinning_service_or_with_a_bad_argument_fails()
    {
        using var bare = new MttyBed(withPinning: false);
        MdevDevice m = bare.Create("mtty-1");
        m.Open(out MdevDeviceFile? f);
        using (f)
        {
            Assert.Equal(Errno.ENOTTY.ToKernelReturn(), f!.Ioctl(MttyDriver.IoctlDmaLoopback, new MttyDmaLoopback(0, 0x1000, 8).ToBytes()));
            Assert.Equal(Errno.EINVAL.ToKernelReturn(), f.Ioctl(MttyDriver.IoctlDmaLoopback, new byte[8]));
        }
    }
}
