using CsCheck;
using Iommu.Core.Tests.Infrastructure;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;

namespace Iommu.Core.Tests;

/// <summary>
/// The 6.2 PASID attach API over a fake driver (pasid-sva.md §2.10): every errno in the order 6.3
/// checks them, the group's PASID array, set_dev_pasid on every group device and the unwind that
/// calls remove_dev_pasid on every device, detach, the type-filtered lookup, and the interplay with
/// group attach and the platform's PASID namespace.
/// </summary>
public sealed class PasidAttachTests : IDisposable
{
    private const string Dev0 = "0000:00:01.0", Dev1 = "0000:00:02.0", Dev2 = "0000:00:03.0";

    private readonly WarningLog _warnings = new();
    private readonly CoreBed _p;

    public PasidAttachTests() => _p = new CoreBed(loggerFactory: _warnings);

    private IommuCore Core => _p.Core;

    private MockIommu Driver => _p.Driver;

    public void Dispose() => _p.Dispose();

    private PciDevice AddPasidDevice(string bdf, int width = 20) => _p.Pci.AddDevice(new PciDeviceSpec(bdf) { PasidWidth = width });

    private (PciDevice[] Devs, IommuGroup Group) SharedGroup(int n)
    {
        string[] names = [Dev0, Dev1, Dev2];
        _p.UseSharedGroupFor(names[..n]);
        _p.WithIommu();
        PciDevice[] devs = [.. names[..n].Select(b => AddPasidDevice(b))];
        Assert.All(devs, d => Assert.Same(devs[0].IommuGroup, d.IommuGroup));
        return (devs, devs[0].IommuGroup!);
    }

    private IDomain? Slot(Device dev, uint pasid)
    {
        Assert.Equal(Errno.None, Core.GetDomainForDevPasid(dev, pasid, DomainType.Blocked, out IDomain? d));
        return d;
    }

    [Fact]
    public void Attach_sets_the_pasid_on_every_group_device_in_list_order_and_fills_the_slot()
    {
        (PciDevice[] devs, IommuGroup group) = SharedGroup(3);
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.ClearLog();

        Assert.Equal(Errno.None, Core.AttachDevicePasid(d, devs[1], 7));

        Assert.Equal([.. devs.Select(x => new DriverCall("set_dev_pasid", Device: x, Domain: d, Pasid: 7))], Driver.Log);
        Assert.Same(d, group.PasidArray[7]);
        Assert.All(devs, x => Assert.Same(d, Slot(x, 7)));
        Assert.Null(Slot(devs[0], 8));
        Assert.NotSame(d, group.Domain); // the RID attachment is independent
    }

    [Fact]
    public void A_driver_without_set_dev_pasid_is_EOPNOTSUPP_before_the_group_is_looked_at()
    {
        using var bed = new CoreBed(OptionalOps.All & ~OptionalOps.Pasid).WithIommu();
        PciDevice dev = bed.Pci.AddDevice(new PciDeviceSpec(Dev0) { PasidWidth = 20 });
        IDomain d = bed.Core.DomainAlloc(bed.Pci)!;
        var orphan = new Device("orphan");
        bed.Platform.AddBus("plain").AddDevice(orphan);

        Assert.Equal(Errno.EOPNOTSUPP, bed.Core.AttachDevicePasid(d, dev, 1));
        Assert.Equal(Errno.EOPNOTSUPP, bed.Core.AttachDevicePasid(d, orphan, 1)); // the op is checked first
        Assert.Empty(dev.IommuGroup!.PasidArray);
    }

    [Fact]
    public void A_device_without_a_group_is_ENODEV()
    {
        _p.WithIommu();
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        var orphan = new Device("orphan");
        _p.Platform.AddBus("plain").AddDevice(orphan);
        Driver.ClearLog();

        Assert.Equal(Errno.ENODEV, Core.AttachDevicePasid(d, orphan, 1));
        Assert.Empty(Driver.Log);
        Assert.Equal(Errno.None, Core.GetDomainForDevPasid(orphan, 1, DomainType.Blocked, out IDomain? got));
        Assert.Null(got);
    }

    [Fact]
    public void An_occupied_slot_is_EBUSY_for_another_domain_and_for_the_same_one_and_nothing_changes()
    {
        (PciDevice[] devs, IommuGroup group) = SharedGroup(2);
        IDomain a = Core.DomainAlloc(_p.Pci)!, b = Core.DomainAlloc(_p.Pci)!;
        Assert.Equal(Errno.None, Core.AttachDevicePasid(a, devs[0], 5));
        Driver.ClearLog();

        Assert.Equal(Errno.EBUSY, Core.AttachDevicePasid(a, devs[0], 5));
        Assert.Equal(Errno.EBUSY, Core.AttachDevicePasid(b, devs[1], 5));

        Assert.Empty(Driver.Log);
        Assert.Same(a, Assert.Single(group.PasidArray).Value);
        Assert.Equal(Errno.None, Core.AttachDevicePasid(b, devs[1], 6)); // another PASID is free
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void A_failure_on_the_nth_device_removes_the_pasid_on_every_device_and_erases_the_slot(int failAt)
    {
        (PciDevice[] devs, IommuGroup group) = SharedGroup(3);
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.SetDevPasidBehaviour = (_, dev, _) => dev == devs[failAt] ? Errno.ENOSPC : Errno.None;
        Driver.ClearLog();

        Assert.Equal(Errno.ENOSPC, Core.AttachDevicePasid(d, devs[0], 9));
        Assert.Equal(Errno.ENOSPC, ErrorDetail.LastErrno); // the unwind does not replace the failure's detail

        // 6.3: set up to the failing device, then remove_dev_pasid on every device, those never set included.
        var expected = new List<DriverCall>();
        for (int i = 0; i <= failAt; i++)
        {
            expected.Add(new DriverCall("set_dev_pasid", Device: devs[i], Domain: d, Pasid: 9));
        }

        expected.AddRange(devs.Select(x => new DriverCall("remove_dev_pasid", Device: x, Pasid: 9)));
        Assert.Equal(expected, Driver.Log);
        Assert.Empty(group.PasidArray);
        Assert.Null(Slot(devs[2], 9));

        Driver.SetDevPasidBehaviour = (_, _, _) => Errno.None;
        Assert.Equal(Errno.None, Core.AttachDevicePasid(d, devs[0], 9)); // the slot was really freed
    }

    [Fact]
    public void Detach_removes_the_pasid_on_every_device_and_erases_the_slot()
    {
        (PciDevice[] devs, IommuGroup group) = SharedGroup(2);
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Assert.Equal(Errno.None, Core.AttachDevicePasid(d, devs[0], 3));
        Driver.ClearLog();

        Core.DetachDevicePasid(d, devs[1], 3);

        Assert.Equal([.. devs.Select(x => new DriverCall("remove_dev_pasid", Device: x, Pasid: 3))], Driver.Log);
        Assert.Empty(group.PasidArray);
        Assert.Empty(_warnings.Warnings);
    }

    [Fact]
    public void Detach_of_a_slot_that_holds_another_domain_or_nothing_warns_and_still_erases_it()
    {
        (PciDevice[] devs, IommuGroup group) = SharedGroup(1);
        IDomain a = Core.DomainAlloc(_p.Pci)!, b = Core.DomainAlloc(_p.Pci)!;
        Assert.Equal(Errno.None, Core.AttachDevicePasid(a, devs[0], 3));
        Driver.ClearLog();

        Core.DetachDevicePasid(b, devs[0], 3); // 6.3: remove, erase, WARN_ON(xa_erase() != domain)
        Assert.Equal([new DriverCall("remove_dev_pasid", Device: devs[0], Pasid: 3)], Driver.Log);
        Assert.Empty(group.PasidArray);
        Assert.Single(_warnings.Warnings);

        Core.DetachDevicePasid(a, devs[0], 3); // now empty: still removes, warns again
        Assert.Equal(2, _warnings.Warnings.Count);
        Assert.Contains("PASID 3", _warnings.Warnings[1], StringComparison.Ordinal);
    }

    [Fact]
    public void Get_filters_by_type_with_EBUSY_and_type_0_accepts_any()
    {
        (PciDevice[] devs, _) = SharedGroup(1);
        IDomain d = Core.DomainAlloc(_p.Pci)!; // UNMANAGED
        Assert.Equal(Errno.None, Core.AttachDevicePasid(d, devs[0], 4));

        Assert.Equal(Errno.None, Core.GetDomainForDevPasid(devs[0], 4, DomainType.Unmanaged, out IDomain? got));
        Assert.Same(d, got);
        Assert.Equal(Errno.EBUSY, Core.GetDomainForDevPasid(devs[0], 4, DomainType.Dma, out got));
        Assert.Null(got);
        Assert.Equal(Errno.None, Core.GetDomainForDevPasid(devs[0], 5, DomainType.Dma, out got)); // empty slot: no filter applies
        Assert.Null(got);
    }

    [Fact]
    public void While_pasids_are_attached_the_group_cannot_be_attached_to_another_domain()
    {
        (PciDevice[] devs, IommuGroup group) = SharedGroup(1);
        IDomain def = group.Domain!;
        IDomain p = Core.DomainAlloc(_p.Pci)!, vfio = Core.DomainAlloc(_p.Pci)!;
        Assert.Equal(Errno.None, Core.AttachDevicePasid(p, devs[0], 1));
        Driver.ClearLog();

        Assert.Equal(Errno.EBUSY, Core.AttachGroup(vfio, group));
        Assert.Equal(Errno.EBUSY, Core.AttachDevice(vfio, devs[0]));
        Assert.Empty(Driver.Calls("attach_dev"));
        Assert.Same(def, group.Domain);

        Core.DetachDevicePasid(p, devs[0], 1);
        Assert.Equal(Errno.None, Core.AttachGroup(vfio, group));
    }

    [Fact]
    public void A_pasid_attached_domain_cannot_be_freed()
    {
        (PciDevice[] devs, _) = SharedGroup(1);
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Assert.Equal(Errno.None, Core.AttachDevicePasid(d, devs[0], 1));

        Assert.Throws<InvalidOperationException>(() => Core.DomainFree(d));

        Core.DetachDevicePasid(d, devs[0], 1);
        Core.DomainFree(d);
        Assert.Throws<ObjectDisposedException>(() => Core.AttachDevicePasid(d, devs[0], 1));
    }

    [Fact]
    public void Global_pasids_are_lowest_free_from_1_below_the_device_width_and_skip_attached_ones()
    {
        _p.WithIommu();
        PciDevice dev = AddPasidDevice(Dev0, width: 2); // PASIDs 0..3: global ones 1..3
        PciDevice plain = _p.AddPci(Dev1);
        IDomain d = Core.DomainAlloc(_p.Pci)!;

        Assert.Equal(Errno.None, Core.AttachDevicePasid(d, dev, 2)); // chosen without allocating
        Assert.Equal(1u, Core.AllocGlobalPasid(dev));
        Assert.Equal(3u, Core.AllocGlobalPasid(dev)); // 2 is attached
        Assert.Equal(IommuCore.PasidInvalid, Core.AllocGlobalPasid(dev));
        Assert.Equal(Errno.ENOSPC, ErrorDetail.LastErrno);
        Assert.Equal(IommuCore.PasidInvalid, Core.AllocGlobalPasid(plain)); // max_pasids 0

        Core.DetachDevicePasid(d, dev, 2);
        Assert.Equal(2u, Core.AllocGlobalPasid(dev));
        Core.FreeGlobalPasid(1);
        Core.FreeGlobalPasid(IommuCore.PasidInvalid); // WARN, nothing freed
        Assert.Equal(1u, Core.AllocGlobalPasid(dev));
    }

    [Fact]
    public void An_allocated_pasid_attached_in_two_groups_stays_reserved_until_both_detach()
    {
        _p.WithIommu();
        PciDevice a = AddPasidDevice(Dev0, width: 2), b = AddPasidDevice(Dev1, width: 2);
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        uint pasid = Core.AllocGlobalPasid(a);
        Assert.Equal(Errno.None, Core.AttachDevicePasid(d, a, pasid));
        Assert.Equal(Errno.None, Core.AttachDevicePasid(d, b, pasid));
        Core.FreeGlobalPasid(pasid);

        Core.DetachDevicePasid(d, a, pasid);
        Assert.NotEqual(pasid, Core.AllocGlobalPasid(a)); // still attached in b's group
        Core.DetachDevicePasid(d, b, pasid);
        Assert.Equal(pasid, Core.AllocGlobalPasid(a));
    }

    // Random attach/detach/lookup sequences on a 3-device group and a single-device group, with a
    // driver that fails set_dev_pasid at random: the slots equal a plain model's, the driver's
    // per-device PASID state equals the slots (invariant 6: set on every device exactly while the
    // slot holds a domain), and each call returns the model's errno.
    [Fact]
    public void Slots_and_driver_state_follow_a_simple_model_over_random_sequences()
    {
        Gen.Select(Gen.Int[0, 4], Gen.Int[0, 3], Gen.Int[0, 2], Gen.UInt[0, 3], Gen.Int[0, 5]).Array[1, 40].Sample(steps =>
        {
            using var bed = new CoreBed();
            bed.UseSharedGroupFor(Dev0, Dev1, Dev2);
            bed.WithIommu();
            PciDevice[] devs =
            [
                .. new[] { Dev0, Dev1, Dev2, "0000:00:04.0" }.Select(n => bed.Pci.AddDevice(new PciDeviceSpec(n) { PasidWidth = 20 })),
            ];
            IDomain[] doms = [bed.Core.DomainAlloc(bed.Pci)!, bed.Core.DomainAlloc(bed.Pci)!, bed.Core.DomainAlloc(bed.Pci)!];
            var model = new Dictionary<(IommuGroup, uint), IDomain>();
            var set = new HashSet<(Device, uint)>();
            int failNext = -1;
            bed.Driver.SetDevPasidBehaviour = (_, dev, p) =>
            {
                if (failNext-- == 0)
                {
                    return Errno.ENOMEM;
                }

                Assert.True(set.Add((dev, p)), $"set_dev_pasid twice on {dev.Name} PASID {p}");
                return Errno.None;
            };
            bed.Driver.Mock.As<IIommuPasidOps>()
                .Setup(o => o.RemoveDevPasid(Moq.It.IsAny<Device>(), Moq.It.IsAny<uint>()))
                .Callback((Device dev, uint p) => set.Remove((dev, p)));

            foreach ((int op, int dev, int dom, uint pasid, int fail) in steps)
            {
                PciDevice device = devs[dev];
                IommuGroup group = device.IommuGroup!;
                IDomain domain = doms[dom];
                switch (op)
                {
                    case 0 or 1:
                        failNext = fail < group.DeviceCount ? fail : -1;
                        Errno expected = model.ContainsKey((group, pasid)) ? Errno.EBUSY : failNext >= 0 ? Errno.ENOMEM : Errno.None;
                        Assert.Equal(expected, bed.Core.AttachDevicePasid(domain, device, pasid));
                        if (expected == Errno.None)
                        {
                            model[(group, pasid)] = domain;
                        }

                        failNext = -1;
                        break;
                    case 2 or 3:
                        bed.Core.DetachDevicePasid(domain, device, pasid);
                        model.Remove((group, pasid));
                        break;
                    default:
                        Assert.Equal(Errno.None, bed.Core.GetDomainForDevPasid(device, pasid, DomainType.Blocked, out IDomain? got));
                        Assert.Same(model.GetValueOrDefault((group, pasid)), got);
                        break;
                }

                var expectedSet = new HashSet<(Device, uint)>();
                foreach (((IommuGroup g, uint p), _) in model)
                {
                    foreach (Device d in g.Devices)
                    {
                        expectedSet.Add((d, p));
                    }
                }

                Assert.True(expectedSet.SetEquals(set), "driver PASID state differs from the slots");
                foreach (IommuGroup g in bed.Core.Groups)
                {
                    Assert.Equal(model.Where(kv => kv.Key.Item1 == g).ToDictionary(kv => kv.Key.Item2, kv => kv.Value), g.PasidArray);
                }
            }
        });
    }
}
