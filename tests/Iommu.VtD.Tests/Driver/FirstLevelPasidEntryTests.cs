using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The PASID entries <c>domain_setup_first_level</c> / <c>intel_pasid_setup_first_level</c> write (pasid-sva.md
/// §1.3, §2.1, §2.2), read as the unit reads them, and every errno of §2.2 in 5.15's order with the
/// entry's bytes unchanged after a failure.
/// </summary>
public sealed class FirstLevelPasidEntryTests
{
    private const ulong Pwsnp = 1UL << 23, Pgsnp = 1UL << 24, Sre = 1, Wpe = 1UL << 4, Flpm5 = 1UL << 2;

    [Theory]
    [InlineData("Fl48", 2UL, 0UL, false)]
    [InlineData("Fl48Coherent", 2UL, 0UL, true)]
    [InlineData("Fl57", 3UL, Flpm5, false)]
    public void Rid2pasid_of_a_dma_domain_is_a_first_level_entry_without_sre(string config, ulong aw, ulong flpm, bool pwsnp)
    {
        using DriverBed f = NewFl(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        var d = (DmarDomain)f.Iommu.GetDomainForDev(dev)!;
        Assert.Equal(DomainType.Dma, d.Type);
        ulong[] e = f.PasidEntry(dev, 0)!;

        // As §1.3's worked example: q0 = P | AW | PGTT=001 (0x49 at AW 2), q1 = DID [| PWSNP], q2 = FLPTR [| FLPM].
        Assert.Equal(1UL | (aw << 2) | (1UL << 6), e[0]);
        Assert.Equal(Did(d) | (pwsnp ? Pwsnp : 0), e[1]);
        Assert.Equal(d.Pgd | flpm, e[2]);
        Assert.All(e[3..], w => Assert.Equal(0UL, w));
        Assert.NotEqual<ushort>(0, Did(d));
        Assert.NotEqual<ushort>(1, Did(d)); // DID 1 is FLPT_DEFAULT_DID (SVA / pass-through)
    }

    [Fact]
    public void The_48_bit_example_reads_0x49_and_did_pwsnp()
    {
        using DriverBed f = NewFl("Fl48Coherent");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        var d = (DmarDomain)f.Iommu.GetDomainForDev(dev)!;
        ulong[] e = f.PasidEntry(dev, 0)!;
        Assert.Equal(0x0000_0000_0000_0049UL, e[0]);
        Assert.Equal(0x0000_0000_0080_0000UL | Did(d), e[1]);
        Assert.Equal(d.Pgd, e[2]);
        Assert.Equal(0UL, e[2] & 0xFFF);
    }

    [Fact]
    public void An_unmanaged_first_level_domain_sets_pgsnp_and_its_aux_pasid_gets_sre_and_wpe()
    {
        // 5.15's rule: UNMANAGED domains are first level too.
        using DriverBed f = NewFl("Fl48Coherent", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain rid = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(rid, dev));
        var r = (DmarDomain)rid;
        Assert.True(r.UseFirstLevel);
        ulong[] e = f.PasidEntry(dev, 0)!;
        Assert.Equal(Did(r) | Pwsnp | Pgsnp, e[1]);
        Assert.Equal(r.Pgd, e[2]);

        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain aux = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(aux, parent));
        var a = (DmarDomain)aux;
        Assert.Equal(1u, a.DefaultPasid);
        ulong[] x = f.PasidEntry(parent, 1)!;
        Assert.Equal(0x49UL, x[0]);
        Assert.Equal(Did(a) | Pwsnp | Pgsnp, x[1]);
        Assert.Equal(a.Pgd | Sre | Wpe, x[2]); // 5.15 supervisor flag for PASID != 0
    }

    [Fact]
    public void Aux_on_first_level_without_srs_is_einval_and_leaves_no_trace()
    {
        using DriverBed f = NewFl(VtdConfig.ScalableModeFirstLevel48Bit with { SupervisorRequests = false }, FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain aux = f.Unmanaged();
        int dids = f.Driver.Units[0].DomainIdsInUse;
        Assert.Equal(Errno.EINVAL, f.Iommu.AttachDeviceAux(aux, parent));
        Assert.Equal(0u, ((DmarDomain)aux).DefaultPasid);
        Assert.Equal(0, f.Driver.PasidsInUse);
        Assert.Equal(dids, f.Driver.Units[0].DomainIdsInUse);
        Assert.All(f.PasidEntry(parent, 1)!, w => Assert.Equal(0UL, w));
    }

    // The checks of intel_pasid_setup_first_level (with domain_setup_first_level's level rules), in 5.15's
    // order, against the driver's own answer for random capability sets, PASIDs and table states.
    private static Errno ExpectedErrno(bool flts, bool srs, bool fl5lp, int unitLevels, bool topPresent, uint pasid, uint maxPasid, bool present)
    {
        if (unitLevels < 5 && !topPresent)
        {
            return Errno.ENOMEM; // domain_setup_first_level: no entry 0 to skip into
        }

        if (unitLevels is not 4 and not 5)
        {
            return Errno.EINVAL;
        }

        if (!flts || pasid >= maxPasid)
        {
            return Errno.EINVAL;
        }

        if (present)
        {
            return Errno.EBUSY;
        }

        if (pasid != 0 && !srs)
        {
            return Errno.EINVAL;
        }

        return unitLevels == 5 && !fl5lp ? Errno.EINVAL : Errno.None;
    }

    [Fact]
    public void Every_errno_of_the_first_level_setter_comes_in_515_order_and_a_failure_changes_no_byte()
    {
        Gen.Select(Gen.Bool, Gen.Bool, Gen.Bool, Gen.Int[3, 5], Gen.Bool, Gen.OneOfConst(0u, 5u, 63u, 0x8000u), Gen.Bool)
            .Sample((flts, srs, fl5lp, unitLevels, mapLow, pasid, occupy) =>
            {
                VtdConfig c = VtdConfig.ScalableMode48Bit with
                {
                    Supports48BitTables = unitLevels >= 4,
                    Supports57BitTables = unitLevels == 5,
                    MaxGuestAddressWidth = unitLevels == 3 ? 39 : unitLevels == 4 ? 48 : 57,
                    FirstLevelTranslation = flts,
                    SupervisorRequests = srs,
                    FirstLevel5LevelPaging = flts && fl5lp,
                };

                // The device sits in the identity domain (a pass-through RID2PASID entry), so PASID 0 is taken.
                using var f = new DriverBed(c, new IntelIommuOptions(), SmallMemory, defaultDomain: DomainType.Identity);
                PciDevice dev = f.AddDevice("0000:00:03.0"); // no PASID capability: the table holds 0x8000 PASIDs
                IntelIommuUnit unit = f.Driver.Units[0];
                var info = (DeviceDomainInfo)dev.IommuPriv!;
                DmarDomain d = f.Driver.NewDomain(firstLevel: true)!; // 5 levels, whatever the unit
                if (mapLow)
                {
                    Assert.Equal(Errno.None, f.Driver.MapPages(d, 0x1000, 0x9000, K4, 1, RW, out _)); // entry 0 at every level
                }

                bool present = pasid == 0;
                if (occupy && pasid == 5)
                {
                    f.Platform.Memory.WriteUInt64(EntryAddress(f, dev, 5), 1UL | (2UL << 6)); // a present entry
                    present = true;
                }

                ulong[]? before = pasid < info.MaxPasid ? f.PasidEntry(dev, pasid) : null;
                long frames = f.Platform.Frames.LiveFrames;
                Errno expected = ExpectedErrno(flts, srs, fl5lp, unitLevels, mapLow, pasid, info.MaxPasid, present);
                Errno err = f.Driver.DomainSetupFirstLevel(unit, d, info, pasid);
                Assert.Equal(expected, err);
                ulong[]? after = pasid < info.MaxPasid ? f.PasidEntry(dev, pasid) : null;
                if (err != Errno.None)
                {
                    Assert.Equal(before, after);
                    Assert.Equal(frames, f.Platform.Frames.LiveFrames);
                }
                else
                {
                    Assert.Equal(1UL | ((ulong)(unitLevels - 2) << 2) | (1UL << 6), after![0]);
                    Assert.Equal(pasid != 0 ? Sre | Wpe : 0, after[2] & (Sre | Wpe));
                    Assert.Equal(unitLevels == 5 ? Flpm5 : 0, after[2] & (3UL << 2));
                    Assert.Equal(0UL, after[1] & Pgsnp); // a DMA domain: no forced snooping
                }
            }, iter: 80);
    }

    // Where the unit finds (dev, pasid)'s entry, for a test that plants one.
    private static ulong EntryAddress(DriverBed f, PciDevice dev, uint pasid)
    {
        ulong root = f.Unit.Read64(0x20) & ~0xFFFUL;
        ulong re = f.Platform.Memory.ReadUInt64(root + (dev.BusNumber * 16UL));
        ulong c0 = f.Platform.Memory.ReadUInt64((re & ~0xFFFUL) + ((dev.DevFn & 0x7FUL) * 32));
        ulong pde = f.Platform.Memory.ReadUInt64((c0 & ~0xFFFUL) + ((pasid >> 6) * 8UL));
        return (pde & ~0xFFFUL) + ((pasid & 63UL) * 64);
    }
}
