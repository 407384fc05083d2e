using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware;
using Iommu.VtD.Tests.Infrastructure;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The device's own view of isolation with ATS: after any driver call returns, no translation a device cached
/// through ATS (its ATC) reaches a page the tables no longer grant it, over random scenarios driven through the
/// core API (<see cref="RandomDriverScenario"/>) on devices with and without ATS, PASID and PRI.
/// </summary>
public sealed class AtsPropertyTests
{
    private const ulong K4 = 4096;

    // Sm48Cm: 5.15 (and 6.3) skip the device-TLB step of a PASID tear-down and of flush_iotlb_all when CAP.CM = 1,
    // relying on the virtual IOMMU's host to shoot the device's cache down; the model's caching-mode unit does
    // that host's part (VtdUnit.FlushAtcsForCachingMode), which this property holds it to.
    private static readonly string[] ConfigNames = ["Sm48", "Sm57", "Fl48", "Fl48All", "Fl57All", "Sm48NoPt", "Sm48Cm"];

    /// <summary>
    /// After every step (maps of 4 KiB to 1 GiB at random IOVAs with holes punched in superpages, unmaps, attach and
    /// detach, aux attach and detach, PASID attach and detach at small and large PASIDs, DMA-API maps, SVA binds,
    /// domain frees, munmap or mprotect of part of a bound process's range, and a device's hot-remove and re-add with its
    /// old domain unmapped while it is away) every device reads and writes through its ATC (<see cref="PciDevice.AtsDmaRead"/>) at the
    /// addresses it read before (so its ATC holds them) and at the current maps' edges, and each access succeeds
    /// exactly when an independent walk of the tables grants it, at the page the walk reaches.
    /// </summary>
    [Fact]
    public void Property_no_device_atc_outlives_the_driver_call_that_removed_its_translation()
    {
        Gen.Select(Gen.Int[0, ConfigNames.Length - 1], Gen.Bool, Gen.UInt, Gen.Int[6, 16])
            .Sample((c, identity, seed, steps) => Run(ConfigNames[c], identity, seed, steps), iter: 300, threads: 1);
    }

    internal static void Run(string configName, bool identity, uint seed, int steps)
    {
        var rng = new Random((int)seed);
        VtdConfig config = RandomDriverScenario.Preset(configName) with { DeviceTlb = true, PageRequests = true, PageRequestDrain = true };
        var options = new Iommu.VtD.Driver.IntelIommuOptions { FirstLevel = configName.EndsWith("All", StringComparison.Ordinal) ? Iommu.VtD.Driver.FirstLevelPolicy.AllWhenEveryUnitHasFlts : Iommu.VtD.Driver.FirstLevelPolicy.FirstLevelByDefault };
        using var f = new DriverBed(config, options, memory: 8 * Sizes.GiB, defaultDomain: identity ? DomainType.Identity : DomainType.Dma);
        var devs = new List<ScenarioDevice>
        {
            new(Aux(f, "0000:00:02.0", pri: rng.Next(2) == 0), true),
            new(Aux(f, "0000:00:04.0", pri: rng.Next(2) == 0), true),
            new(f.Pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Ats = true, Acs = true }), false), // ATS without PASID
            new(f.AddDevice("0000:01:10.1"), false), // no ATS: the same checks through untranslated DMA
        };
        var scenario = new RandomDriverScenario(f, rng, identity, devs);
        var warm = new List<(ScenarioDevice Dev, uint? Pasid, ulong Iova)>();
        scenario.Start();
        for (int step = 0; step < steps; step++)
        {
            if (rng.Next(8) == 0 && HotCycle(f, scenario, rng))
            {
                // A device went away and came back.
            }
            else if (scenario.Svas.Count > 0 && rng.Next(3) == 0)
            {
                MmChange(scenario, rng);
            }
            else
            {
                scenario.Step();
            }

            Check(f, rng, scenario, warm, $"{configName} identity={identity} seed={seed} steps={steps} step {step}");
        }

        scenario.UnbindAll();
        Check(f, rng, scenario, warm, $"{configName} identity={identity} seed={seed} after unbinding every SVA");
    }

    // The process changes its mapping under a bind: the mmu notifier's invalidation must reach the ATC for any
    // sub-range (1 to 3 pages at any page offset), as munmap or a write protection.
    private static void MmChange(RandomDriverScenario s, Random rng)
    {
        (_, ProcessAddressSpace mm, ulong va, _) = s.Svas[rng.Next(s.Svas.Count)];
        int first = rng.Next(4);
        int pages = rng.Next(1, 5 - first);
        if (rng.Next(2) == 0)
        {
            mm.Munmap(va + ((ulong)first * K4), (ulong)pages * K4);
            s.Log.Add($"munmap va+{first} pages {pages}");
        }
        else
        {
            mm.Mprotect(va + ((ulong)first * K4), (ulong)pages * K4, VmProt.Read);
            s.Log.Add($"mprotect read-only va+{first} pages {pages}");
        }
    }

    // Hot-remove and re-add of a device with only a RID attachment, its old domain changing while it is away: no
    // invalidation reaches a removed device, so release must leave nothing in its ATC (5.15 release_device →
    // iommu_disable_dev_iotlb → pci_disable_ats), and the device comes back on its new group's default domain.
    private static bool HotCycle(DriverBed f, RandomDriverScenario s, Random rng)
    {
        ScenarioDevice[] idle = [.. s.Devices.Where(d => d.Pasids.Count == 0 && !s.Svas.Any(b => b.Dev == d))];
        if (idle.Length == 0)
        {
            return false;
        }

        ScenarioDevice dev = idle[rng.Next(idle.Length)];
        IDomain? old = dev.Rid;
        f.Pci.RemoveDevice(dev.Pci);
        s.Log.Add($"hot-remove {dev.Pci.Name}");
        if (old is not null && s.Maps.TryGetValue(old, out List<(ulong Iova, ulong Size)>? list) && list.Count > 0 && rng.Next(2) == 0)
        {
            (ulong iova, ulong size) = list[rng.Next(list.Count)];
            ulong got = f.Iommu.Unmap(old, iova, size);
            list.RemoveAll(m => m.Iova == iova);
            s.Log.Add($"unmap {iova:x}+{size:x} while it is away: {got:x}");
        }

        Assert.Equal(Errno.None, f.Pci.AddDevice(dev.Pci));
        if (dev.Aux)
        {
            Assert.Equal(Errno.None, f.Iommu.SetDevAttr(dev.Pci, IommuDevAttr.AuxdEnable));
        }

        dev.Rid = f.Iommu.GetDomainForDev(dev.Pci);
        s.Log.Add($"re-add {dev.Pci.Name}");
        return true;
    }

    private static PciDevice Aux(DriverBed f, string bdf, bool pri)
    {
        PciDevice dev = f.Pci.AddDevice(new PciDeviceSpec(bdf) { PasidWidth = 20, Ats = true, Pri = pri, ScalableIov = true, Acs = true });
        Assert.Equal(Errno.None, f.Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
        return dev;
    }

    private static void Check(DriverBed f, Random rng, RandomDriverScenario s, List<(ScenarioDevice Dev, uint? Pasid, ulong Iova)> warm, string where)
    {
        var walker = new IndependentWalker(f.Unit, f.Platform.Memory);
        var probes = new List<(ScenarioDevice Dev, uint? Pasid, ulong Iova)>(warm);
        foreach (ScenarioDevice d in s.Devices)
        {
            var targets = new List<(uint? Pasid, IDomain? Domain)> { (null, d.Rid) };
            foreach (KeyValuePair<uint, IDomain> kv in d.Pasids)
            {
                targets.Add((kv.Key, kv.Value));
            }

            foreach ((uint? pasid, IDomain? dom) in targets)
            {
                if (dom is not null && s.Maps.TryGetValue(dom, out List<(ulong Iova, ulong Size)>? list))
                {
                    foreach ((ulong iova, ulong size) in list)
                    {
                        probes.Add((d, pasid, iova));
                        probes.Add((d, pasid, iova + ((ulong)rng.NextInt64(0, (long)(size / K4)) * K4) + 0x10));
                        probes.Add((d, pasid, iova + size - 8));
                    }
                }

                // Whatever this device's other attachments map: a translation of a domain it no longer reaches.
                foreach (List<(ulong Iova, ulong Size)> other in s.Maps.Values)
                {
                    if (other.Count > 0 && rng.Next(3) == 0)
                    {
                        probes.Add((d, pasid, other[rng.Next(other.Count)].Iova));
                    }
                }
            }
        }

        foreach ((ScenarioDevice dev, ulong va) in s.ExtraVas)
        {
            probes.Add((dev, null, va));
        }

        foreach ((IommuSva h, _, ulong va, ScenarioDevice dev) in s.Svas)
        {
            uint pasid = f.Iommu.SvaGetPasid(h);
            for (ulong off = 0x10; off < 4 * K4; off += K4)
            {
                probes.Add((dev, pasid, va + off));
            }
        }

        warm.Clear();
        foreach ((ScenarioDevice dev, uint? pasid, ulong iova) in probes.Distinct())
        {
            if (Probe(f, walker, dev, pasid, iova, s.Log, where) && warm.Count < 400)
            {
                warm.Add((dev, pasid, iova)); // in the ATC now: the next step must invalidate it if it removes it
            }
        }
    }

    // One read and one write through the device's ATC; true when the read succeeded (the ATC holds the page).
    private static bool Probe(DriverBed f, IndependentWalker walker, ScenarioDevice d, uint? pasid, ulong iova, List<string> log, string where)
    {
        if (pasid is null && iova <= 0xFEEF_FFFF && iova + 8 > 0xFEE0_0000)
        {
            return false; // an interrupt message, not DMA
        }

        ReferenceWalk w = walker.Walk(d.Pci.RequesterId, pasid, iova, out _);
        if (w.Undecided)
        {
            return false;
        }

        string Why(string what, DmaResult r) => $"{where}: {d.Pci.Name} (ATS {d.Pci.AtsEnabled}) pasid {pasid?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"} iova 0x{iova:x} {what}: {r}, tables {w}\n  " + string.Join("\n  ", log.TakeLast(14));

        byte[] b = new byte[1];
        DmaResult read = Settle(d.Pci, () => d.Pci.AtsDmaRead(pasid, iova, b));
        Assert.True(Reached(read) == w.Allows(write: false), Why("read", read));
        Assert.True(!read.IsOk || read.Address == w.Pa, Why("read reached another page", read));

        // A page request the read sent may have had the page mapped (SVA): walk again.
        w = walker.Walk(d.Pci.RequesterId, pasid, iova, out _);

        // Write back what the page the tables name holds, so a write that lands where it should changes nothing.
        ulong pa = read.IsOk ? read.Address : w.Allows(write: true) ? w.Pa : 0;
        byte[] v = new byte[1];
        _ = pa != 0 && f.Platform.Memory.TryRead(pa, v);
        DmaResult write = Settle(d.Pci, () => d.Pci.AtsDmaWrite(pasid, iova, v));
        Assert.True(Reached(write) == w.Allows(write: true), Why("write", write));
        Assert.True(!write.IsOk || write.Address == w.Pa, Why("write reached another page", write));
        return read.IsOk;
    }

    // Translated: the bytes moved, or the address is outside memory (an identity map beyond the RAM).
    private static bool Reached(DmaResult r) => r.IsOk || r.Status == DmaStatus.MemoryError;

    // A PRI device's refused access sends a page request that the host answers on its own threads: wait for the
    // answer, so the tables (an SVA fault may map the page) are settled before the next walk.
    private static DmaResult Settle(PciDevice dev, Func<DmaResult> access)
    {
        DmaResult r = access();
        if (r.Status == DmaStatus.PageRequestPending)
        {
            Assert.True(dev.WaitForPageGroupResponses(TimeSpan.FromSeconds(10)), "no page group response");
        }

        return r;
    }
}
