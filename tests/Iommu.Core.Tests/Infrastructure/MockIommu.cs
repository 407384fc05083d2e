using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using Moq;

namespace Iommu.Core.Tests.Infrastructure;

/// <summary>
/// A Moq <see cref="IIommuOps"/> whose map/unmap/attach callbacks record what the core asked for
/// (in <see cref="Log"/>) and whose answers tests can override. Its ops object also implements the
/// optional-callback interfaces named in <see cref="Optional"/>, and no others (the C# form of the
/// kernel's NULL callbacks). The object is built on the first use of <see cref="Ops"/>; a test that
/// leaves a group out sets <see cref="Optional"/> before that.
/// </summary>
public sealed class MockIommu
{
    public const ulong Sz4K = 0x1000;
    public const ulong Sz64K = 0x10000;
    public const ulong Sz2M = 0x200000;
    public const ulong Sz1G = 0x40000000;
    public const ulong Bitmap4K2M1G = Sz4K | Sz2M | Sz1G;

    private readonly Lock _lock = new();
    private OptionalOps _optional;
    private IIommuOps? _ops;

    public MockIommu(OptionalOps optional = OptionalOps.All, ulong pgsizeBitmap = Bitmap4K2M1G)
    {
        _optional = optional;
        PgsizeBitmap = pgsizeBitmap;
        Mock = new Mock<IIommuOps>(MockBehavior.Loose);
        Mock.SetupGet(o => o.PgsizeBitmap).Returns(() => PgsizeBitmap);

        Mock.Setup(o => o.DomainAlloc(It.IsAny<DomainType>()))
            .Returns((DomainType t) => DomainAllocBehaviour(t));

        Mock.Setup(o => o.IovaToPhys(It.IsAny<IDomain>(), It.IsAny<ulong>()))
            .Returns((IDomain d, ulong iova) => IovaToPhysBehaviour(iova));

        Mock.Setup(o => o.AddDevice(It.IsAny<Device>()))
            .Returns((Device dev) =>
            {
                Record(new DriverCall("add_device", Device: dev));
                return AddDeviceBehaviour(dev);
            });
        Mock.Setup(o => o.RemoveDevice(It.IsAny<Device>()))
            .Callback((Device dev) => Record(new DriverCall("remove_device", Device: dev)));

        Mock.Setup(o => o.DeviceGroup(It.IsAny<Device>(), out It.Ref<IommuGroup?>.IsAny))
            .Returns(new DeviceGroupFn((Device dev, out IommuGroup? group) =>
            {
                Record(new DriverCall("device_group", Device: dev));
                if (DeviceGroupBehaviour is null)
                {
                    throw new InvalidOperationException("MockIommu.DeviceGroupBehaviour not set.");
                }

                return DeviceGroupBehaviour(dev, out group);
            }));
    }

    public Mock<IIommuOps> Mock { get; }

    public IIommuOps Ops => _ops ??= Build();

    /// <summary>The optional-callback groups the ops object implements; fixed once <see cref="Ops"/> is built.</summary>
    public OptionalOps Optional
    {
        get => _optional;
        set
        {
            if (_ops is not null)
            {
                throw new InvalidOperationException("MockIommu.Optional is fixed once Ops is built: set it before the first use.");
            }

            _optional = value;
        }
    }

    public Mock<IIommuAttachOps> AttachMock => Group<IIommuAttachOps>(OptionalOps.Attach);

    public Mock<IIommuMapOps> MapMock => Group<IIommuMapOps>(OptionalOps.Map);

    public Mock<IIommuIotlbOps> IotlbMock => Group<IIommuIotlbOps>(OptionalOps.Iotlb);

    public Mock<IIommuCapableOps> CapableMock => Group<IIommuCapableOps>(OptionalOps.Capable);

    public Mock<IIommuPageResponseOps> PageResponseMock => Group<IIommuPageResponseOps>(OptionalOps.PageResponse);

    public Mock<IIommuDomainAttrOps> DomainAttrMock => Group<IIommuDomainAttrOps>(OptionalOps.DomainAttr);

    public Mock<IIommuAuxOps> AuxMock => Group<IIommuAuxOps>(OptionalOps.Aux);

    public Mock<IIommuDevFeatureOps> DevFeatureMock => Group<IIommuDevFeatureOps>(OptionalOps.DevFeature);

    /// <summary>(domain, device, pasid) → result of <c>set_dev_pasid</c>.</summary>
    public Func<IDomain, Device, uint, Errno> SetDevPasidBehaviour { get; set; } = (_, _, _) => Errno.None;

    public ulong PgsizeBitmap { get; set; }

    public List<DriverCall> Log { get; } = [];

    public Func<DomainType, IDomain?> DomainAllocBehaviour { get; set; } = _ => new IommuDomain();

    public Func<IDomain, Device, Errno> AttachBehaviour { get; set; } = (_, _) => Errno.None;

    public Func<ulong, ulong, ulong, Errno> MapBehaviour { get; set; } = (_, _, _) => Errno.None;

    /// <summary>(iova, paddr, pgsize, count) → (result, bytes mapped).</summary>
    public Func<ulong, ulong, ulong, ulong, (Errno, ulong)> MapPagesBehaviour { get; set; } = (_, _, pgsize, count) => (Errno.None, pgsize * count);

    /// <summary>(iova, pgsize, count) → bytes unmapped.</summary>
    public Func<ulong, ulong, ulong, ulong> UnmapBehaviour { get; set; } = (_, pgsize, count) => pgsize * count;

    public Func<ulong, ulong> IovaToPhysBehaviour { get; set; } = _ => 0;

    public Func<Device, Errno> AddDeviceBehaviour { get; set; } = _ => Errno.None;

    public DeviceGroupFn? DeviceGroupBehaviour { get; set; }

    public IReadOnlyList<DriverCall> Calls(string op)
    {
        lock (_lock)
        {
            return Log.Where(c => c.Op == op).ToList();
        }
    }

    public IReadOnlyList<string> OpNames()
    {
        lock (_lock)
        {
            return Log.Select(c => c.Op).ToList();
        }
    }

    public void ClearLog()
    {
        lock (_lock)
        {
            Log.Clear();
        }

        Mock.Invocations.Clear();
    }

    /// <summary>A paging domain owned by this driver, built without the core (for map/unmap tests).</summary>
    public IommuDomain NewDomain(DomainType type = DomainType.Unmanaged, ulong? pgsizeBitmap = null) => new()
    {
        Type = type,
        Ops = Ops,
        PgsizeBitmap = pgsizeBitmap ?? PgsizeBitmap,
    };

    private void Record(DriverCall call)
    {
        lock (_lock)
        {
            Log.Add(call);
        }
    }

    private IIommuOps Build()
    {
        if (_optional.HasFlag(OptionalOps.Attach))
        {
            Mock<IIommuAttachOps> attach = Mock.As<IIommuAttachOps>();
            attach.Setup(o => o.AttachDev(It.IsAny<IDomain>(), It.IsAny<Device>()))
                .Returns((IDomain d, Device dev) =>
                {
                    Record(new DriverCall("attach_dev", Device: dev, Domain: d));
                    return AttachBehaviour(d, dev);
                });
            attach.Setup(o => o.DetachDev(It.IsAny<IDomain>(), It.IsAny<Device>()))
                .Callback((IDomain d, Device dev) => Record(new DriverCall("detach_dev", Device: dev, Domain: d)));
        }

        if (_optional.HasFlag(OptionalOps.Map))
        {
            Mock<IIommuMapOps> map = Mock.As<IIommuMapOps>();
            map.Setup(o => o.Map(It.IsAny<IDomain>(), It.IsAny<ulong>(), It.IsAny<ulong>(), It.IsAny<ulong>(), It.IsAny<IommuProt>()))
                .Returns((IDomain d, ulong iova, ulong pa, ulong size, IommuProt prot) =>
                {
                    Record(new DriverCall("map", iova, pa, size, 1, Domain: d));
                    return MapBehaviour(iova, pa, size);
                });

            map.Setup(o => o.Unmap(It.IsAny<IDomain>(), It.IsAny<ulong>(), It.IsAny<ulong>(), ref It.Ref<IommuIotlbGather>.IsAny))
                .Returns(new UnmapFn((IDomain d, ulong iova, ulong size, ref IommuIotlbGather gather) =>
                {
                    Record(new DriverCall("unmap", iova, 0, size, 1, Domain: d));
                    ulong r = UnmapBehaviour(iova, size, 1);
                    if (r != 0)
                    {
                        gather.AddRange(iova, r);
                    }

                    return r;
                }));
        }

        if (_optional.HasFlag(OptionalOps.MapPages))
        {
            Mock<IIommuMapPagesOps> pages = Mock.As<IIommuMapPagesOps>();
            pages.Setup(o => o.MapPages(It.IsAny<IDomain>(), It.IsAny<ulong>(), It.IsAny<ulong>(), It.IsAny<ulong>(), It.IsAny<ulong>(), It.IsAny<IommuProt>(), out It.Ref<ulong>.IsAny))
                .Returns(new MapPagesFn((IDomain d, ulong iova, ulong pa, ulong pgsize, ulong count, IommuProt prot, out ulong mapped) =>
                {
                    Record(new DriverCall("map_pages", iova, pa, pgsize, count, Domain: d));
                    (Errno e, ulong m) = MapPagesBehaviour(iova, pa, pgsize, count);
                    mapped = m;
                    return e;
                }));

            pages.Setup(o => o.UnmapPages(It.IsAny<IDomain>(), It.IsAny<ulong>(), It.IsAny<ulong>(), It.IsAny<ulong>(), ref It.Ref<IommuIotlbGather>.IsAny))
                .Returns(new UnmapPagesFn((IDomain d, ulong iova, ulong pgsize, ulong count, ref IommuIotlbGather gather) =>
                {
                    Record(new DriverCall("unmap_pages", iova, 0, pgsize, count, Domain: d));
                    ulong r = UnmapBehaviour(iova, pgsize, count);
                    if (r != 0)
                    {
                        gather.AddRange(iova, r);
                    }

                    return r;
                }));
        }

        if (_optional.HasFlag(OptionalOps.Iotlb))
        {
            Mock<IIommuIotlbOps> iotlb = Mock.As<IIommuIotlbOps>();
            iotlb.Setup(o => o.IotlbSync(It.IsAny<IDomain>(), ref It.Ref<IommuIotlbGather>.IsAny))
                .Callback(new IotlbSyncFn((IDomain d, ref IommuIotlbGather gather) =>
                    Record(gather.IsEmpty
                        ? new DriverCall("iotlb_sync", Domain: d)
                        : new DriverCall("iotlb_sync", gather.Start, 0, gather.End - gather.Start + 1, Domain: d))));

            iotlb.Setup(o => o.IotlbSyncMap(It.IsAny<IDomain>(), It.IsAny<ulong>(), It.IsAny<ulong>()))
                .Callback((IDomain d, ulong iova, ulong size) => Record(new DriverCall("iotlb_sync_map", iova, 0, size, Domain: d)));
        }

        if (_optional.HasFlag(OptionalOps.Pasid))
        {
            Mock<IIommuPasidOps> pasid = Mock.As<IIommuPasidOps>();
            pasid.Setup(o => o.SetDevPasid(It.IsAny<IDomain>(), It.IsAny<Device>(), It.IsAny<uint>()))
                .Returns((IDomain d, Device dev, uint p) =>
                {
                    Record(new DriverCall("set_dev_pasid", Device: dev, Domain: d, Pasid: p));
                    return SetDevPasidBehaviour(d, dev, p);
                });
            pasid.Setup(o => o.RemoveDevPasid(It.IsAny<Device>(), It.IsAny<uint>()))
                .Callback((Device dev, uint p) => Record(new DriverCall("remove_dev_pasid", Device: dev, Pasid: p)));
            pasid.Setup(o => o.MaxPasids(It.IsAny<Device>())).Returns(uint.MaxValue); // no IOMMU limit: the device's width decides
        }

        foreach ((OptionalOps group, Action add) in new (OptionalOps, Action)[]
        {
            (OptionalOps.Capable, () => Mock.As<IIommuCapableOps>()),
            (OptionalOps.ResvRegions, () => Mock.As<IIommuResvRegionsOps>()),
            (OptionalOps.PageResponse, () => Mock.As<IIommuPageResponseOps>()),
            (OptionalOps.DomainAttr, () => Mock.As<IIommuDomainAttrOps>()),
            (OptionalOps.Aux, () => Mock.As<IIommuAuxOps>()),
            (OptionalOps.DevFeature, () => Mock.As<IIommuDevFeatureOps>()),
        })
        {
            if (_optional.HasFlag(group))
            {
                add();
            }
        }

        return Mock.Object;
    }

    // The mock of an optional group the ops object implements (building the object first).
    private Mock<T> Group<T>(OptionalOps group)
        where T : class
    {
        _ = Ops;
        if (!_optional.HasFlag(group))
        {
            throw new InvalidOperationException($"This MockIommu has no {typeof(T).Name} ({group} is not in Optional).");
        }

        return Mock.As<T>();
    }
}
