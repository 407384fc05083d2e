using Iommu.Core.Tests.Infrastructure;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;

namespace Iommu.Core.Tests;

public sealed class GroupFormationTests : IDisposable
{
    private readonly Platform _platform = new(new PlatformOptions { MemorySize = Sizes.GiB, TableMemorySize = 16 * Sizes.MiB });
    private readonly PciBus _pci;
    private readonly GroupingDriver _driver;

    public GroupFormationTests()
    {
        _pci = _platform.AddPciBus();
        _driver = new GroupingDriver(_platform.Iommu);
    }

    public void Dispose() => _platform.Dispose();

    [Fact]
    public void Isolated_devices_get_singleton_groups_with_lowest_free_ids_and_a_default_domain()
    {
        PciDevice a = _pci.AddDevice(new PciDeviceSpec("0000:00:02.0"));
        PciDevice b = _pci.AddDevice(new PciDeviceSpec("0000:00:04.0"));

        Assert.Equal(Errno.None, _pci.SetIommuOps(_driver));

        Assert.Equal(0, a.IommuGroup!.Id);
        Assert.Equal(1, b.IommuGroup!.Id);
        Assert.NotSame(a.IommuGroup, b.IommuGroup);
        Assert.NotNull(a.IommuGroup.DefaultDomain);
        Assert.Equal(DomainType.Dma, a.IommuGroup.DefaultDomain!.Type);
        Assert.Same(a.IommuGroup.DefaultDomain, a.IommuGroup.Domain);
        Assert.Contains((a.IommuGroup.DefaultDomain, (Device)a), _driver.Attaches);
        Assert.Equal(2, _driver.Attaches.Count);
    }

    [Fact]
    public void Functions_of_a_multifunction_device_without_acs_share_a_group()
    {
        _pci.SetIommuOps(_driver);
        PciDevice f0 = _pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Multifunction = true });
        PciDevice f1 = _pci.AddDevice(new PciDeviceSpec("0000:00:03.1") { Multifunction = true });
        PciDevice other = _pci.AddDevice(new PciDeviceSpec("0000:00:04.0"));

        Assert.Same(f0.IommuGroup, f1.IommuGroup);
        Assert.NotSame(f0.IommuGroup, other.IommuGroup);
        Assert.Equal(2, f0.IommuGroup!.DeviceCount);
        Assert.Equal(new Device[] { f0, f1 }, f0.IommuGroup.Devices);
    }

    [Fact]
    public void Functions_with_acs_are_isolated()
    {
        _pci.SetIommuOps(_driver);
        PciDevice f0 = _pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Multifunction = true, Acs = true });
        PciDevice f1 = _pci.AddDevice(new PciDeviceSpec("0000:00:03.1") { Multifunction = true, Acs = true });

        Assert.NotSame(f0.IommuGroup, f1.IommuGroup);
    }

    [Fact]
    public void Dma_aliases_share_a_group_whichever_side_declares_the_alias()
    {
        _pci.SetIommuOps(_driver);
        PciDevice target = _pci.AddDevice(new PciDeviceSpec("0000:00:05.0"));
        PciDevice aliasing = _pci.AddDevice(new PciDeviceSpec("0000:00:06.0") { DmaAliases = [target.DevFn] });
        PciDevice aliased = _pci.AddDevice(new PciDeviceSpec("0000:00:07.0"));
        PciDevice declarer = _pci.AddDevice(new PciDeviceSpec("0000:00:08.0") { DmaAliases = [aliased.DevFn] });

        Assert.Same(target.IommuGroup, aliasing.IommuGroup);
        Assert.Same(aliased.IommuGroup, declarer.IommuGroup);
        Assert.NotSame(target.IommuGroup, aliased.IommuGroup);
    }

    [Fact]
    public void Devices_behind_a_pcie_to_pci_bridge_share_the_bridge_group()
    {
        _pci.SetIommuOps(_driver);
        PciDevice port = _pci.AddDevice(new PciDeviceSpec("0000:00:1c.0") { IsBridge = true, Acs = true });
        PciDevice bridge = _pci.AddDevice(new PciDeviceSpec("0000:01:00.0") { IsPcieToPciBridge = true, Upstream = port.Address, Acs = true });
        PciDevice d1 = _pci.AddDevice(new PciDeviceSpec("0000:02:01.0") { Upstream = bridge.Address, Acs = true });
        PciDevice d2 = _pci.AddDevice(new PciDeviceSpec("0000:02:02.0") { Upstream = bridge.Address, Acs = true });

        Assert.Same(bridge.IommuGroup, d1.IommuGroup);
        Assert.Same(bridge.IommuGroup, d2.IommuGroup);
        Assert.NotSame(port.IommuGroup, bridge.IommuGroup);
        Assert.Equal(3, bridge.IommuGroup!.DeviceCount);
    }

    [Fact]
    public void Devices_behind_a_port_without_acs_join_the_port_group()
    {
        _pci.SetIommuOps(_driver);
        PciDevice port = _pci.AddDevice(new PciDeviceSpec("0000:00:1c.0") { IsBridge = true });
        PciDevice d1 = _pci.AddDevice(new PciDeviceSpec("0000:01:00.0") { Upstream = port.Address, Acs = true });
        PciDevice isolatedPort = _pci.AddDevice(new PciDeviceSpec("0000:00:1d.0") { IsBridge = true, Acs = true });
        PciDevice d2 = _pci.AddDevice(new PciDeviceSpec("0000:03:00.0") { Upstream = isolatedPort.Address });

        Assert.Same(port.IommuGroup, d1.IommuGroup);
        Assert.NotSame(isolatedPort.IommuGroup, d2.IommuGroup);
    }

    [Fact]
    public void Removing_the_last_device_releases_the_group_and_its_id_is_reused_lowest_first()
    {
        _pci.SetIommuOps(_driver);
        PciDevice a = _pci.AddDevice(new PciDeviceSpec("0000:00:02.0"));
        PciDevice b = _pci.AddDevice(new PciDeviceSpec("0000:00:03.0"));
        PciDevice c = _pci.AddDevice(new PciDeviceSpec("0000:00:04.0"));
        IommuGroup groupB = b.IommuGroup!;

        _pci.RemoveDevice(b);

        Assert.True(groupB.IsReleased);
        Assert.Null(b.IommuGroup);
        Assert.Null(_platform.Iommu.GroupGetById(1));
        PciDevice d = _pci.AddDevice(new PciDeviceSpec("0000:00:05.0"));
        Assert.Equal(1, d.IommuGroup!.Id);
        Assert.Equal(new[] { 0, 1, 2 }, _platform.Iommu.Groups.Select(g => g.Id));
        Assert.Equal(0, a.IommuGroup!.Id);
        Assert.Equal(2, c.IommuGroup!.Id);
    }

    // iommu_group_get reads the device's group and then takes a reference; racing the last put, it took one on a
    // group already at zero and handed out a group being released (whose second "last" put ran the release again).
    [Fact]
    public void Group_get_racing_the_last_put_never_hands_out_a_released_group()
    {
        _pci.SetIommuOps(_driver);
        int released = 0, rounds = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(1.5) && released == 0)
        {
            PciDevice a = _pci.AddDevice(new PciDeviceSpec("0000:00:02.0"));
            bool done = false;
            using var started = new ManualResetEventSlim();
            var getter = new Thread(() =>
            {
                started.Set();
                while (!Volatile.Read(ref done))
                {
                    if (_platform.Iommu.GroupGet(a) is IommuGroup g)
                    {
                        if (g.IsReleased)
                        {
                            Interlocked.Increment(ref released);
                        }

                        _platform.Iommu.GroupPut(g);
                    }
                }
            });
            getter.Start();
            Assert.True(started.Wait(TimeSpan.FromSeconds(30)));
            Thread.SpinWait(rounds++ % 256);
            _pci.RemoveDevice(a);
            Volatile.Write(ref done, true);
            Assert.True(getter.Join(TimeSpan.FromSeconds(30)));
            Assert.Empty(_platform.Iommu.Groups);
        }

        Assert.True(released == 0, $"a released group was handed out (round {rounds})");
    }

    [Fact]
    public void A_group_held_by_a_reference_outlives_its_devices()
    {
        _pci.SetIommuOps(_driver);
        PciDevice a = _pci.AddDevice(new PciDeviceSpec("0000:00:02.0"));
        IommuGroup held = _platform.Iommu.GroupGet(a)!;

        _pci.RemoveDevice(a);
        Assert.False(held.IsReleased);
        Assert.Equal(0, held.DeviceCount);

        _platform.Iommu.GroupPut(held);
        Assert.True(held.IsReleased);
    }

    [Fact]
    public void Non_pci_devices_get_generic_singleton_groups()
    {
        Bus platformBus = _platform.AddBus("platform");
        platformBus.SetIommuOps(_driver);
        var d1 = new Device("acpi-dev0");
        var d2 = new Device("acpi-dev1");
        platformBus.AddDevice(d1);
        platformBus.AddDevice(d2);

        Assert.NotNull(d1.IommuGroup);
        Assert.NotSame(d1.IommuGroup, d2.IommuGroup);
        Assert.Equal(Errno.EINVAL, _platform.Iommu.PciDeviceGroup(d1, out IommuGroup? none));
        Assert.Null(none);
    }

    [Fact]
    public void Group_notifiers_see_add_and_delete()
    {
        _pci.SetIommuOps(_driver);
        PciDevice f0 = _pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Multifunction = true });
        var events = new List<(IommuGroupNotification, string)>();
        IommuGroupNotifier notifier = (action, dev) => events.Add((action, dev.Name));
        Assert.Equal(Errno.None, f0.IommuGroup!.RegisterNotifier(notifier));

        PciDevice f1 = _pci.AddDevice(new PciDeviceSpec("0000:00:03.1") { Multifunction = true });
        _pci.RemoveDevice(f1);

        Assert.Equal(
            new[] { (IommuGroupNotification.AddDevice, "0000:00:03.1"), (IommuGroupNotification.DelDevice, "0000:00:03.1") },
            events);
        Assert.Equal(Errno.None, f0.IommuGroup.UnregisterNotifier(notifier));
        Assert.Equal(Errno.ENOENT, f0.IommuGroup.UnregisterNotifier(notifier));
    }

    [Fact]
    public void Passthrough_default_makes_identity_default_domains()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = Sizes.GiB, TableMemorySize = 16 * Sizes.MiB, DefaultDomainType = DomainType.Identity });
        PciBus pci = platform.AddPciBus();
        pci.SetIommuOps(new GroupingDriver(platform.Iommu));
        PciDevice a = pci.AddDevice(new PciDeviceSpec("0000:00:02.0"));

        Assert.Equal(DomainType.Identity, a.IommuGroup!.DefaultDomain!.Type);
    }

    [Fact]
    public void Adding_a_duplicate_address_or_a_missing_upstream_is_rejected()
    {
        _pci.AddDevice(new PciDeviceSpec("0000:00:02.0"));

        Assert.Throws<ArgumentException>(() => _pci.AddDevice(new PciDeviceSpec("0000:00:02.0")));
        var ex = Assert.Throws<ArgumentException>(() => _pci.AddDevice(new PciDeviceSpec("0000:05:00.0") { Upstream = PciAddress.Parse("0000:00:1c.0", null) }));
        Assert.Contains("0000:00:1c.0", ex.Message, StringComparison.Ordinal);
    }
}
