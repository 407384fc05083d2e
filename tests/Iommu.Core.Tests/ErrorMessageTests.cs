using Iommu.Core.Tests.Infrastructure;
using Iommu.Devices;
using Iommu.Domains;

namespace Iommu.Core.Tests;

/// <summary>ThrowIfError turns an errno into an IommuException whose message says which device or range failed.</summary>
public sealed class ErrorMessageTests : IDisposable
{
    private const string Dev0 = "0000:00:02.0";

    private readonly CoreBed _p = new();

    private MockIommu Driver => _p.Driver;

    private IommuCore Core => _p.Core;

    public void Dispose() => _p.Dispose();

    [Fact]
    public void Attach_of_a_device_without_group_names_the_device()
    {
        PciDevice dev = _p.AddPci(Dev0);

        IommuException e = Assert.Throws<IommuException>(() => Core.AttachDevice(Driver.NewDomain(), dev).ThrowIfError());

        Assert.Equal(Errno.ENODEV, e.Errno);
        Assert.Contains(Dev0, e.Message, StringComparison.Ordinal);
        Assert.Contains("ENODEV", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_driver_attach_failure_names_the_device()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Driver.AttachBehaviour = (_, _) => Errno.EIO;

        IommuException e = Assert.Throws<IommuException>(() => Core.AttachDevice(d, dev).ThrowIfError());

        Assert.Equal(Errno.EIO, e.Errno);
        Assert.Contains(Dev0, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_unaligned_map_names_the_iova_in_hex()
    {
        IommuDomain d = Driver.NewDomain();

        IommuException e = Assert.Throws<IommuException>(() => Core.Map(d, 0x12800, 0x40000, 0x1000, IommuProt.Read).ThrowIfError());

        Assert.Equal(Errno.EINVAL, e.Errno);
        Assert.Contains("0x12800", e.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void A_driver_map_failure_names_the_failing_iova_in_hex()
    {
        Driver.Optional &= ~OptionalOps.MapPages;
        IommuDomain d = Driver.NewDomain();
        Driver.MapBehaviour = (iova, _, _) => iova == 0x7000 ? Errno.ENOMEM : Errno.None;

        IommuException e = Assert.Throws<IommuException>(() => Core.Map(d, 0x5000, 0x5000, 0x4000, IommuProt.Read).ThrowIfError());

        Assert.Equal(Errno.ENOMEM, e.Errno);
        Assert.Contains("0x7000", e.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void A_negative_int_result_throws_with_the_device_name()
    {
        Driver.Optional &= ~OptionalOps.Aux;
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain d = Core.DomainAlloc(_p.Pci)!;

        IommuException e = Assert.Throws<IommuException>(() => Core.AuxGetPasid(d, dev).ThrowIfError());

        Assert.Equal(Errno.ENODEV, e.Errno);
        Assert.Contains(Dev0, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Register_of_a_fault_handler_twice_names_the_device()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        Assert.Equal(Errno.None, Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null));

        IommuException e = Assert.Throws<IommuException>(() => Core.RegisterDeviceFaultHandler(dev, (_, _) => Errno.None, null).ThrowIfError());

        Assert.Equal(Errno.EBUSY, e.Errno);
        Assert.Contains(Dev0, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Success_does_not_throw_and_a_positive_int_is_returned()
    {
        IommuDomain d = Driver.NewDomain();

        Core.Map(d, 0x1000, 0x1000, 0x1000, IommuProt.Read).ThrowIfError();
        Assert.Equal(5, 5.ThrowIfError());
    }

    [Fact]
    public void A_later_success_clears_the_last_message()
    {
        _p.WithIommu();
        PciDevice dev = _p.AddPci(Dev0);
        IDomain d = Core.DomainAlloc(_p.Pci)!;
        Assert.Equal(Errno.EINVAL, Core.Map(d, 0x12800, 0x40000, 0x1000, IommuProt.Read));
        Assert.Contains("0x12800", ErrorDetail.LastMessage, StringComparison.Ordinal);

        // A success of another kind (no map) forgets it, and so does a successful map.
        Assert.Equal(Errno.None, Core.AttachDevice(d, dev));
        Assert.Null(ErrorDetail.LastMessage);
        Assert.Equal(Errno.None, ErrorDetail.LastErrno);

        Assert.Equal(Errno.EINVAL, Core.Map(d, 0x12800, 0x40000, 0x1000, IommuProt.Read));
        Assert.Equal(Errno.EINVAL, ErrorDetail.LastErrno);
        Core.Unmap(d, 0x1000, 0x1000); // returns bytes, not an errno: still a call that did not fail
        Assert.Null(ErrorDetail.LastMessage);

        Assert.Equal(Errno.EINVAL, Core.Map(d, 0x12800, 0x40000, 0x1000, IommuProt.Read));
        Assert.Equal(Errno.None, Core.Map(d, 0x1000, 0x1000, 0x1000, IommuProt.Read));
        Assert.Null(ErrorDetail.LastMessage);
        Assert.Equal(Errno.None, ErrorDetail.LastErrno);
    }

    [Fact]
    public void An_older_detail_is_not_attached_to_a_later_error_without_one()
    {
        IommuDomain d = Driver.NewDomain();
        Assert.Equal(Errno.EINVAL, Core.Map(d, 0x12800, 0x40000, 0x1000, IommuProt.Read));
        Assert.Equal(Errno.None, Core.Map(d, 0x1000, 0x1000, 0x1000, IommuProt.Read));

        // Same errno, raised by the caller, with no detail of its own: the map's message is gone.
        IommuException e = Assert.Throws<IommuException>(() => Errno.EINVAL.ThrowIfError());
        Assert.DoesNotContain("0x12800", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Cleanup_inside_PreserveWhileUnwinding_does_not_replace_the_first_failure()
    {
        Errno first = ErrorDetail.Fail(Errno.EPERM, "the real cause");
        using (ErrorDetail.PreserveWhileUnwinding())
        {
            ErrorDetail.Clear();
            ErrorDetail.Fail(Errno.EBUSY, "a cleanup step's own failure");
        }

        Assert.Equal(Errno.EPERM, ErrorDetail.LastErrno);
        IommuException e = Assert.Throws<IommuException>(() => first.ThrowIfError());
        Assert.Contains("the real cause", e.Message, StringComparison.Ordinal);
    }
}
