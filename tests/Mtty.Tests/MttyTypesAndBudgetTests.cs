using Iommu;
using Vfio.Mdev;

namespace Mtty.Tests;

public sealed class MttyTypesAndBudgetTests
{
    [Fact]
    public void Parent_lists_mtty_1_and_mtty_2_with_their_attributes()
    {
        using var bed = new MttyBed();
        Assert.Equal(["mtty-1", "mtty-2"], bed.Core.FindParent(bed.Driver.ParentDevice)!.SupportedTypes.Select(t => t.Name));
        Assert.Equal(["available_instances", "create", "device_api", "devices", "name"], bed.Type("mtty-2").ListDirectory());
        Assert.Equal(Errno.None, bed.Type("mtty-1").ReadAttribute("name", out string n1));
        Assert.Equal(Errno.None, bed.Type("mtty-2").ReadAttribute("name", out string n2));
        Assert.Equal("Single port serial\n", n1);
        Assert.Equal("Dual port serial\n", n2);
        Assert.Equal(Errno.None, bed.Type("mtty-1").ReadAttribute("device_api", out string api));
        Assert.Equal("vfio-pci\n", api);
    }

    [Fact]
    public void Available_instances_counts_ports_left_of_24_per_type()
    {
        using var bed = new MttyBed();
        Assert.Equal("24\n", bed.Available("mtty-1"));
        Assert.Equal("12\n", bed.Available("mtty-2"));

        MdevDevice two = bed.Create("mtty-2");
        Assert.Equal("22\n", bed.Available("mtty-1"));
        Assert.Equal("11\n", bed.Available("mtty-2"));

        MdevDevice one = bed.Create("mtty-1");
        Assert.Equal("21\n", bed.Available("mtty-1"));
        Assert.Equal("10\n", bed.Available("mtty-2")); // 21 / 2

        Assert.Equal(Errno.None, bed.Core.Remove(two));
        Assert.Equal("23\n", bed.Available("mtty-1"));
        Assert.Equal(Errno.None, bed.Core.Remove(one));
        Assert.Equal("24\n", bed.Available("mtty-1"));
        Assert.Equal(0, bed.Driver.UsedPorts);
    }

    [Fact]
    public void Create_does_not_enforce_the_budget_as_in_5_15()
    {
        using var bed = new MttyBed();
        for (int i = 0; i < 12; i++)
        {
            bed.Create("mtty-2");
        }

        Assert.Equal("0\n", bed.Available("mtty-1"));
        Assert.Equal("0\n", bed.Available("mtty-2"));
        bed.Create("mtty-1"); // accepted anyway
        Assert.Equal("-1\n", bed.Available("mtty-1"));
        Assert.Equal(25, bed.Driver.UsedPorts);
    }

    [Fact]
    public void With_an_enforced_budget_create_returns_ENOSPC_through_the_mdev_core()
    {
        using var bed = new MttyBed(enforceBudget: true);
        for (int i = 0; i < 23; i++)
        {
            bed.Create("mtty-1");
        }

        Assert.Equal(Errno.ENOSPC, bed.Core.Create(bed.Type("mtty-2"), Guid.NewGuid(), out MdevDevice? m));
        Assert.Null(m);
        Assert.Equal("1\n", bed.Available("mtty-1"));
        Assert.Equal("0\n", bed.Available("mtty-2"));
        bed.Create("mtty-1");
        Assert.Equal("0\n", bed.Available("mtty-1"));
    }

    [Fact]
    public void Each_driver_instance_has_its_own_budget()
    {
        using var bed = new MttyBed();
        var second = new MttyDriver(bed.Platform.Memory);
        Assert.Equal(Errno.None, second.Register(bed.Core));
        bed.Create("mtty-2");
        Assert.Equal("11\n", bed.Available("mtty-2"));
        Assert.Equal(Errno.None, bed.Core.FindParent(second.ParentDevice)!.FindType("mtty-2")!.ReadAttribute("available_instances", out string v));
        Assert.Equal("12\n", v);
    }

    [Fact]
    public void Unregistering_returns_every_port()
    {
        using var bed = new MttyBed();
        bed.Create("mtty-2");
        bed.Create("mtty-1");
        bed.Core.UnregisterDevice(bed.Driver.ParentDevice);
        Assert.Equal(0, bed.Driver.UsedPorts);
        Assert.Empty(bed.Core.Devices);
    }

    [Fact]
    public void Mtty_is_vendor_isolated()
    {
        using var bed = new MttyBed();
        MdevDevice m = bed.Create("mtty-1");
        Assert.Null(m.GetIommuDevice());
        Assert.Equal([m], m.IommuGroup!.Devices);
    }
}
