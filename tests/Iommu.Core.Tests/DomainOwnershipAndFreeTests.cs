using Iommu.Core.Tests.Infrastructure;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Faults;
using Moq;

namespace Iommu.Core.Tests;

/// <summary>
/// What a consumer may do with a domain: read its ops and type (only the core sets them), and free it
/// once; a second free, an attach, a map or an unmap of a freed domain says the domain was freed.
/// </summary>
public sealed class DomainOwnershipAndFreeTests : IDisposable
{
    private const string Dev0 = "0000:00:02.0";

    private readonly CoreBed _p = new();

    private IommuCore Core => _p.Core;

    public void Dispose() => _p.Dispose();

    [Fact]
    public void Ops_and_type_are_read_only_to_consumers_and_set_by_the_core()
    {
        Assert.Null(typeof(IDomain).GetProperty(nameof(IDomain.Ops))!.SetMethod);
        Assert.Null(typeof(IDomain).GetProperty(nameof(IDomain.Type))!.SetMethod);
        Assert.False(typeof(IommuDomain).GetProperty(nameof(IommuDomain.Ops))!.SetMethod!.IsPublic);
        Assert.False(typeof(IommuDomain).GetProperty(nameof(IommuDomain.Type))!.SetMethod!.IsPublic);

        _p.WithIommu();
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Assert.Same(_p.Driver.Ops, d.Ops);
        Assert.Equal(DomainType.Unmanaged, d.Type);
    }

    [Fact]
    public void A_foreign_domain_reporting_other_ops_is_a_driver_bug_and_is_freed()
    {
        var wrong = new ReportingDomain(null, DomainType.Unmanaged);
        _p.Driver.DomainAllocBehaviour = _ => wrong;
        _p.WithIommu();

        InvalidOperationException e = Assert.Throws<InvalidOperationException>(() => Core.DomainAlloc(_p.Pci));

        Assert.Contains("must report the ops and type it was allocated for", e.Message, StringComparison.Ordinal);
        _p.Driver.Mock.Verify(o => o.DomainFree(wrong), Times.Once);
    }

    [Fact]
    public void A_second_free_says_the_domain_was_already_freed_and_does_not_reach_the_driver()
    {
        _p.WithIommu();
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Core.DomainFree(d);

        ObjectDisposedException e = Assert.Throws<ObjectDisposedException>(() => Core.DomainFree(d));

        Assert.Contains("already freed", e.Message, StringComparison.Ordinal);
        _p.Driver.Mock.Verify(o => o.DomainFree(d), Times.Once);
    }

    [Fact]
    public void Attach_and_map_of_a_freed_domain_say_it_was_freed_and_unmap()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Core.DomainFree(d);
        _p.Driver.ClearLog();

        Assert.Contains("already freed", Assert.Throws<ObjectDisposedException>(() => Core.AttachDevice(d, dev)).Message, StringComparison.Ordinal);
        Assert.Contains("already freed", Assert.Throws<ObjectDisposedException>(() => Core.AttachGroup(d, dev.IommuGroup!)).Message, StringComparison.Ordinal);
        Assert.Contains("already freed", Assert.Throws<ObjectDisposedException>(() => Core.Map(d, 0x1000, 0x1000, 0x1000, IommuProt.Read)).Message, StringComparison.Ordinal);
        Assert.Contains("already freed", Assert.Throws<ObjectDisposedException>(() => Core.Unmap(d, 0x1000, 0x1000)).Message, StringComparison.Ordinal);
        Assert.Equal("", string.Join(",", _p.Driver.OpNames())); // the driver never saw the freed domain again
    }

    [Fact]
    public void A_domain_the_driver_hands_out_again_after_a_free_is_usable()
    {
        var shared = new IommuDomain();
        _p.Driver.DomainAllocBehaviour = _ => shared;
        _p.WithIommu();
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Core.DomainFree(d);

        Assert.Same(shared, Core.DomainAlloc(_p.Pci));
        Assert.Equal(Errno.None, Core.Map(shared, 0x1000, 0x1000, 0x1000, IommuProt.Read));
    }

    private sealed class ReportingDomain(IIommuOps? ops, DomainType type) : IDomain
    {
        public DomainType Type { get; } = type;

        public IIommuOps? Ops { get; } = ops;

        public ulong PgsizeBitmap { get; set; }

        public IommuDomainGeometry Geometry { get; set; }

        public IommuFaultHandler? Handler { get; set; }

        public object? HandlerToken { get; set; }
    }
}
