using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Nested domains the 6.7+ iommufd way (pasid-sva.md §1.6, §2.9): nest parents, nested domains from a
/// stage-1 description, the PGTT=011 entry bytes, every errno with state unchanged, tear-down and
/// parent/user invalidations read from the queue.
/// </summary>
public sealed class NestedDomainTests
{
    private const ulong Sre = 1, Wpe = 1UL << 4, Eafe = 1UL << 7, Flpm5 = 1UL << 2, Pwsnp = 1UL << 23;

    private static (DmarDomain Parent, DmarDomain Nested) NewNested(DriverBed f, IommuHwptVtdS1 s1)
    {
        Assert.Equal(Errno.None, f.Driver.DomainAllocNestParent(f.Pci, out DmarDomain? parent));
        Assert.Equal(Errno.None, f.Driver.DomainAllocNested(parent!, s1, out DmarDomain? nested));
        return (parent!, nested!);
    }

    [Theory]
    [InlineData(FirstLevelPolicy.FirstLevelByDefault)]
    [InlineData(FirstLevelPolicy.AllWhenEveryUnitHasFlts)]
    public void A_nest_parent_is_a_second_level_domain_of_the_core(FirstLevelPolicy policy)
    {
        using DriverBed f = NewFl("Fl48", policy);
        Assert.Equal(Errno.None, f.Driver.DomainAllocNestParent(f.Pci, out DmarDomain? parent));
        Assert.True(parent!.IsNestParent);
        Assert.False(parent.UseFirstLevel);
        Assert.Equal(DomainType.Unmanaged, parent.Type);
        Assert.Equal(Errno.None, f.Iommu.Map(parent, 0x10_0000, 0x20_0000, K4, RW));
        Assert.Equal(0x20_0000UL, f.Iommu.IovaToPhys(parent, 0x10_0000));
        Assert.Equal(parent.PageTable.Root, parent.Pgd);
    }

    [Fact]
    public void Without_nest_no_parent_and_no_nested_domain()
    {
        using DriverBed f = New("Sm48");
        Assert.Equal(Errno.EOPNOTSUPP, f.Driver.DomainAllocNestParent(f.Pci, out DmarDomain? parent));
        Assert.Null(parent);
        var plain = (DmarDomain)f.Unmanaged();
        Assert.Equal(Errno.EOPNOTSUPP, f.Driver.DomainAllocNested(plain, new IommuHwptVtdS1(IommuVtdS1.None, 0x1000, 48), out DmarDomain? nested));
        Assert.Null(nested);
    }

    [Fact]
    public void Nested_allocation_refuses_a_plain_parent_unknown_flags_and_a_table_beyond_the_aperture()
    {
        using DriverBed f = NewFl("Fl48");
        var plain = (DmarDomain)f.Unmanaged();
        Assert.Equal(Errno.None, f.Driver.DomainAllocNestParent(f.Pci, out DmarDomain? parent));
        var good = new IommuHwptVtdS1(IommuVtdS1.Sre, 0x1000, 48);
        Assert.Equal(Errno.EINVAL, f.Driver.DomainAllocNested(plain, good, out DmarDomain? n));
        Assert.Null(n);
        Assert.Equal(Errno.EINVAL, f.Driver.DomainAllocNested(parent!, good with { Flags = (IommuVtdS1)8 }, out n));
        Assert.Equal(Errno.EINVAL, f.Driver.DomainAllocNested(parent!, good with { PgtblAddr = parent!.Geometry.ApertureEnd + 1 }, out n));
        Assert.Null(n);
        Assert.Empty(parent.NestedChildren);
        Assert.Equal(Errno.None, f.Driver.DomainAllocNested(parent, good with { PgtblAddr = parent.Geometry.ApertureEnd & ~0xFFFUL }, out n));
        Assert.Same(parent, n!.NestParent);
        Assert.True(n.UseFirstLevel);
    }

    [Theory]
    [InlineData("Fl48", 48u, IommuVtdS1.None, 0UL)]
    [InlineData("Fl48", 48u, IommuVtdS1.Sre | IommuVtdS1.Wpe, Sre | Wpe)]
    [InlineData("Fl48", 48u, IommuVtdS1.Wpe, 0UL)] // WPE only with SRE
    [InlineData("Fl48", 48u, IommuVtdS1.Eafe | IommuVtdS1.Sre, Sre | Eafe)]
    [InlineData("Fl57", 57u, IommuVtdS1.None, Flpm5)]
    [InlineData("Fl57", 48u, IommuVtdS1.None, 0UL)]
    public void Attaching_a_nested_domain_writes_the_pgtt_011_entry(string config, uint width, IommuVtdS1 flags, ulong q2Bits)
    {
        using DriverBed f = NewFl(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        (DmarDomain parent, DmarDomain nested) = NewNested(f, new IommuHwptVtdS1(flags, 0x7_6543_2000, width));
        Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested, dev));
        ulong[] e = f.PasidEntry(dev, 0)!;
        int agaw = config == "Fl57" ? 3 : 2;
        Assert.Equal(parent.PageTable.Root | 1UL | ((ulong)agaw << 2) | (3UL << 6), e[0]); // SLPTPTR | P | AW | PGTT=011, FPD clear
        Assert.Equal((ulong)Did(nested), e[1]);
        Assert.Equal(0x7_6543_2000UL | q2Bits, e[2]);
        Assert.All(e[3..], w => Assert.Equal(0UL, w));
        Assert.NotEqual(0, Did(nested));
        Assert.Equal(0, Did(parent)); // the parent holds no DID of its own through a nested attach
        Assert.Equal(nested.StageOne.PgtblAddr, nested.Pgd);
    }

    [Fact]
    public void Pwsnp_follows_smpwcs_in_nested_entries()
    {
        using DriverBed f = NewFl("Fl48Coherent");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        (_, DmarDomain nested) = NewNested(f, new IommuHwptVtdS1(IommuVtdS1.None, 0x2000, 48));
        Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested, dev));
        Assert.Equal(Pwsnp | Did(nested), f.PasidEntry(dev, 0)![1]);
    }

    // intel_pasid_setup_nested's capability checks in 6.7 order.
    private static Errno Expected(uint width, IommuVtdS1 flags, bool fl5lp, bool srs, bool eafs)
    {
        if (width == 57 && !fl5lp)
        {
            return Errno.EINVAL;
        }

        if (width is not 48 and not 57)
        {
            return Errno.EINVAL;
        }

        if ((flags & IommuVtdS1.Sre) != 0 && !srs)
        {
            return Errno.EINVAL;
        }

        return (flags & IommuVtdS1.Eafe) != 0 && !eafs ? Errno.EINVAL : Errno.None;
    }

    [Fact]
    public void Every_nested_attach_errno_leaves_the_device_in_its_domain_byte_for_byte()
    {
        Gen.Select(Gen.OneOfConst(0u, 39u, 48u, 57u, 64u), Gen.Int[0, 7], Gen.Bool, Gen.Bool, Gen.Bool).Sample((width, flagBits, fl5lp, srs, eafs) =>
        {
            VtdConfig c = VtdConfig.ScalableModeFirstLevel57Bit with { FirstLevel5LevelPaging = fl5lp, SupervisorRequests = srs, ExtendedAccessedFlag = eafs };
            using DriverBed f = NewFl(c);
            PciDevice dev = f.AddDevice("0000:00:03.0");
            var flags = (IommuVtdS1)flagBits;
            Assert.Equal(Errno.None, f.Driver.DomainAllocNestParent(f.Pci, out DmarDomain? parent));
            Assert.Equal(Errno.None, f.Driver.DomainAllocNested(parent!, new IommuHwptVtdS1(flags, 0x5000, width), out DmarDomain? nested));
            ulong[] before = f.PasidEntry(dev, 0)!;
            int dids = f.Driver.Units[0].DomainIdsInUse;
            long frames = f.Platform.Frames.LiveFrames;
            Errno err = f.Driver.AttachNestedDev(nested!, dev);
            Assert.Equal(Expected(width, flags, fl5lp, srs, eafs), err);
            if (err != Errno.None)
            {
                Assert.Equal(before, f.PasidEntry(dev, 0));
                Assert.Equal(dids, f.Driver.Units[0].DomainIdsInUse);
                Assert.Equal(frames, f.Platform.Frames.LiveFrames);
                Assert.Equal(0, Did(nested!));
            }
            else
            {
                Assert.Equal(3UL << 6, f.PasidEntry(dev, 0)![0] & (7UL << 6));
            }
        }, iter: 60);
    }

    [Fact]
    public void A_nested_entry_is_torn_down_with_a_pasid_cache_then_a_domain_selective_iotlb_flush()
    {
        using DriverBed f = NewFl("Fl48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        (_, DmarDomain nested) = NewNested(f, new IommuHwptVtdS1(IommuVtdS1.None, 0x2000, 48));
        Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested, dev));
        ushort did = Did(nested);
        var qi = new QiTrace(f);
        f.Driver.DetachDev(nested, dev);
        List<(int Type, ulong Q0, ulong Q1)> sent = qi.Since();
        Assert.Equal((DescPasidCache, PasidCacheQ0(did, 0, 1), 0UL), sent[0]);
        Assert.Equal(DescIotlb, sent[1].Type);
        Assert.Equal(2UL, (sent[1].Q0 >> 4) & 3); // domain-selective
        Assert.Equal((ulong)did, (sent[1].Q0 >> 16) & 0xFFFF);
        Assert.Equal(0, Did(nested));
    }

    [Fact]
    public void An_unmap_in_the_parent_flushes_the_nested_domains_dids()
    {
        using DriverBed f = NewFl("Fl48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        (DmarDomain parent, DmarDomain nested) = NewNested(f, new IommuHwptVtdS1(IommuVtdS1.None, 0x2000, 48));
        Assert.Equal(Errno.None, f.Iommu.Map(parent, 0x40_0000, 0x9000, K4, RW));
        Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested, dev));
        var qi = new QiTrace(f);
        Assert.Equal(K4, f.Iommu.Unmap(parent, 0x40_0000, K4));
        List<(int Type, ulong Q0, ulong Q1)> sent = qi.Since();
        (int type, ulong q0, ulong q1) = Assert.Single(sent);
        Assert.Equal(DescIotlb, type);
        Assert.Equal((ulong)Did(nested), (q0 >> 16) & 0xFFFF);
        Assert.Equal(2UL, (q0 >> 4) & 3); // domain-selective: every nested entry of the child (see FlushNestedChildren)
        Assert.Equal(0UL, q1);
    }

    [Fact]
    public void User_invalidation_sends_p_iotlb_for_the_nested_did_and_stops_at_the_first_bad_request()
    {
        using DriverBed f = NewFl("Fl48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        (_, DmarDomain nested) = NewNested(f, new IommuHwptVtdS1(IommuVtdS1.None, 0x2000, 48));
        Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested, dev));
        ushort did = Did(nested);
        var qi = new QiTrace(f);
        IommuHwptVtdS1Invalidate[] ok =
        [
            new(0x7000_0000, 4, IommuVtdInv.Leaf),
            new(0, ulong.MaxValue, IommuVtdInv.None),
        ];
        Assert.Equal(Errno.None, f.Driver.CacheInvalidateUser(nested, ok, out int processed));
        Assert.Equal(2, processed);
        Assert.Equal(
            [(DescPiotlb, PiotlbQ0(did, 0, 3), 0x7000_0000UL | (1UL << 6) | 2), (DescPiotlb, PiotlbQ0(did, 0, 2), 0UL)],
            qi.Since());

        IommuHwptVtdS1Invalidate[] bad =
        [
            new(0x1000, 1, IommuVtdInv.None),
            new(0x1800, 1, IommuVtdInv.None),
            new(0x3000, 1, IommuVtdInv.None),
        ];
        Assert.Equal(Errno.EINVAL, f.Driver.CacheInvalidateUser(nested, bad, out processed));
        Assert.Equal(1, processed);
        Assert.Single(qi.Since());
        Assert.Equal(Errno.EINVAL, f.Driver.CacheInvalidateUser(nested, [new(0x1000, ulong.MaxValue, IommuVtdInv.None)], out processed));
        Assert.Equal(0, processed);
        Assert.Equal(Errno.EOPNOTSUPP, f.Driver.CacheInvalidateUser(nested, [new(0x1000, 1, (IommuVtdInv)2)], out processed));
        Assert.Empty(qi.Since());
        Assert.Equal(Errno.EINVAL, f.Driver.CacheInvalidateUser((DmarDomain)f.Unmanaged(), ok, out processed));
    }

    [Fact]
    public void Freeing_the_parent_first_detaches_its_nested_domains_so_no_entry_points_at_a_freed_table()
    {
        using DriverBed f = NewFl("Fl48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        (DmarDomain parent, DmarDomain nested) = NewNested(f, new IommuHwptVtdS1(IommuVtdS1.None, 0x2000, 48));
        Assert.Equal(Errno.None, f.Driver.AttachNestedDev(nested, dev));
        Assert.NotEqual(0, Did(nested));
        f.Iommu.DomainFree(parent);
        Assert.Equal(0, Did(nested));
        Assert.Null(f.PasidEntry(dev, 0)); // context entry cleared with the device's domain
        Assert.Null(dev.IommuPriv);
    }

    [Fact]
    public void A_failed_allocation_during_a_nested_attach_leaks_nothing()
    {
        using DriverBed f = NewFl("Fl48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        (_, DmarDomain nested) = NewNested(f, new IommuHwptVtdS1(IommuVtdS1.Sre, 0x2000, 48));
        f.Driver.DetachDev(f.Iommu.GetDomainForDev(dev)!, dev); // the device in no domain; its context table stays
        long frames = f.Platform.Frames.LiveFrames;
        int dids = f.Driver.Units[0].DomainIdsInUse;
        int failures = 0;
        for (int n = 1; n <= 6; n++)
        {
            f.Platform.Frames.FailNth(n);
            Errno err = f.Driver.AttachNestedDev(nested, dev);
            bool fired = !f.Platform.Frames.FailurePending;
            f.Platform.Frames.FailNth(0);
            if (fired)
            {
                failures++;
                Assert.True(err is Errno.ENOMEM or Errno.ENODEV, $"fail_nth={n}: {err}");
                Assert.Equal(0, Did(nested));
            }
            else
            {
                Assert.Equal(Errno.None, err);
                Assert.Equal(3UL << 6, f.PasidEntry(dev, 0)![0] & (7UL << 6));
                f.Driver.DetachDev(nested, dev);
            }

            Assert.Equal(frames, f.Platform.Frames.LiveFrames);
            Assert.Equal(dids, f.Driver.Units[0].DomainIdsInUse);
        }

        Assert.True(failures >= 2, $"only {failures} injected failures hit the attach");
    }
}
