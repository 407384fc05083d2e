using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Driver.Format;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// iommu_attach_device_pasid on the VT-d model with intel-iommu's set_dev_pasid for paging domains
/// (≈6.5): DMA through the attached PASID, the PASID entry's bytes, unmap and detach flushes, the
/// driver's refusals with state unchanged, and aux domains sharing the device's PASID space.
/// </summary>
public sealed class PasidAttachTests
{
    private const ulong Iova = 0x4000_0000;
    private const ulong PaA = 0x1_4000_0000, PaB = 0x1_8000_0000;

    // The 64-byte PASID entry of (dev, pasid) as the hardware reads it (zeros without a table page).
    private static ulong[] Entry(DriverBed f, PciDevice dev, uint pasid)
    {
        var words = new ulong[8];
        if (dev.IommuPriv is not DeviceDomainInfo info || info.PasidDirectory == 0 || pasid >= info.MaxPasid)
        {
            return words;
        }

        var pde = new PasidDirEntry(f.Platform.Memory.ReadUInt64(PasidDirEntry.Address(info.PasidDirectory, pasid)));
        if (pde.Present)
        {
            ulong at = PasidEntry.Address(pde.Table, pasid);
            for (int i = 0; i < 8; i++)
            {
                words[i] = f.Platform.Memory.ReadUInt64(at + ((ulong)i * 8));
            }
        }

        return words;
    }

    private static IDomain Mapped(DriverBed f, ulong pa)
    {
        IDomain d = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(d, Iova, pa, M2, RW));
        return d;
    }

    // A device taken out of its group (iommu_group_remove_device) with a PASID still attached: the group's pasid_array
    // that named the domain went with the group, so iommu_domain_free no longer refuses the domain. The driver's free
    // must take the PASID entry down, as it does the RID's (5.15 domain_exit -> domain_remove_dev_info) and the aux
    // domains' entries; it left the entry pointing at the freed tables, whose frames the next domain reused (found by
    // the chaos property, seed 201001).
    [Theory]
    [MemberData(nameof(ScalableConfigs), MemberType = typeof(DriverTestKit))]
    public void Freeing_a_domain_a_device_out_of_its_group_reaches_by_pasid_takes_the_pasid_entry_down(string config)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 20);
        PciDevice other = f.AddDevice("0000:00:04.0", pasidWidth: 20);
        IDomain a = Mapped(f, PaA);
        uint pasid = f.Iommu.AllocGlobalPasid(dev);
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(a, dev, pasid));

        // Into another group: the device takes that group's domain, and the driver re-programs its PASID attachments
        // into the new PASID table (they live as long as the device), while no group names a any more.
        f.Iommu.GroupRemoveDevice(dev);
        Assert.Equal(Errno.None, f.Iommu.GroupAddDevice(other.IommuGroup!, dev));
        f.AssertDma(dev, pasid, Iova + 0x80, PaA + 0x80, "the PASID attachment outlives the group");

        f.Iommu.DomainFree(a);

        Assert.All(Entry(f, dev, pasid), w => Assert.Equal(0UL, w));
        IDomain b = Mapped(f, PaB); // reuses the freed table frames
        f.AssertDma(dev, pasid, Iova + 0x80, 0, "no DMA through a freed domain's tables, nor through the frames' next owner");
        Assert.Equal(PaB + 0x80, f.Iommu.IovaToPhys(b, Iova + 0x80));
    }

    [Theory]
    [MemberData(nameof(ScalableConfigs), MemberType = typeof(DriverTestKit))]
    public void Dma_with_an_attached_pasid_translates_through_the_domain_and_faults_after_detach(string config)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 20);
        IDomain def = f.Iommu.GetDmaDomain(dev)!;
        IDomain a = Mapped(f, PaA);
        uint pasid = f.Iommu.AllocGlobalPasid(dev);
        Assert.Equal(1u, pasid);

        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(a, dev, pasid));

        f.AssertDma(dev, pasid, Iova + 0x80, PaA + 0x80);
        f.AssertDma(dev, pasid + 1, Iova + 0x80, 0, "another PASID translates nothing");
        f.AssertDma(dev, null, Iova + 0x80, f.Iommu.IovaToPhys(def, Iova + 0x80), "RID DMA still uses the default domain");
        f.AssertDma(dev, null, Iova + 0x80, 0, "the default domain maps nothing there");

        // The entry: present, second level, the domain's DID on this unit, SRE as for every PASID but 0.
        var pe = PasidEntry.Load(f.Platform.Memory, EntryAddress(dev, pasid));
        Assert.True(pe.Present);
        Assert.Equal(PasidPgtt.SecondLevel, pe.Pgtt);
        Assert.Equal(((DmarDomain)a).DidOn(0), pe.DomainId);
        Assert.NotEqual(0, pe.DomainId);
        Assert.Equal(f.Unit.Config.SupervisorRequests, (Entry(f, dev, pasid)[2] & 1) != 0);
        Assert.True(dev.PasidEnabled);

        f.Iommu.DetachDevicePasid(a, dev, pasid);

        Assert.All(Entry(f, dev, pasid), w => Assert.Equal(0UL, w));
        int before = f.Driver.Faults.Count;
        f.AssertDma(dev, pasid, Iova + 0x80, 0, "after detach, with the IOTLB warm before it");
        DmarFaultRecord fault = f.Driver.Faults[before];
        Assert.Equal(pasid, fault.Pasid);
        Assert.Equal(dev.RequesterId, fault.SourceId);
        Assert.Equal(0, ((DmarDomain)a).DidOn(0)); // the domain's reference on the unit was dropped
        Assert.Equal(Errno.None, f.Iommu.GetDomainForDevPasid(dev, pasid, DomainType.Blocked, out IDomain? got));
        Assert.Null(got);
    }

    private static ulong EntryAddress(PciDevice dev, uint pasid)
    {
        var info = (DeviceDomainInfo)dev.IommuPriv!;
        var pde = new PasidDirEntry(Platform(dev).Memory.ReadUInt64(PasidDirEntry.Address(info.PasidDirectory, pasid)));
        return PasidEntry.Address(pde.Table, pasid);
    }

    private static Platform Platform(Device dev) => dev.Platform!;

    [Theory]
    [MemberData(nameof(ScalableConfigs), MemberType = typeof(DriverTestKit))]
    public void Unmap_stops_dma_on_an_attached_pasid_even_with_a_warm_iotlb(string config)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 20);
        IDomain a = Mapped(f, PaA);
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(a, dev, 5));
        f.AssertDma(dev, 5, Iova + K4, PaA + K4); // caches the translation

        Assert.Equal(K4, f.Iommu.Unmap(a, Iova + K4, K4));

        f.AssertDma(dev, 5, Iova + K4, 0, "after unmap");
        f.AssertDma(dev, 5, Iova, PaA, "the rest of the domain still maps");
    }

    [Fact]
    public void One_domain_spans_devices_and_pasids_and_each_detach_ends_only_its_own()
    {
        using DriverBed f = New("Sm48");
        PciDevice x = f.AddDevice("0000:00:02.0", pasidWidth: 20), y = f.AddDevice("0000:00:03.0", pasidWidth: 20);
        IDomain a = Mapped(f, PaA);
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(a, x, 3));
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(a, y, 3));
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(a, y, 4));
        ushort did = ((DmarDomain)a).DidOn(0);
        f.AssertDma(x, 3, Iova, PaA);
        f.AssertDma(y, 3, Iova, PaA);
        f.AssertDma(y, 4, Iova, PaA);

        f.Iommu.DetachDevicePasid(a, y, 3);
        f.AssertDma(y, 3, Iova, 0, "y's PASID 3 is detached");
        f.AssertDma(x, 3, Iova, PaA, "x's PASID 3 is another group's slot");
        f.AssertDma(y, 4, Iova, PaA);
        Assert.Equal(did, ((DmarDomain)a).DidOn(0));

        f.Iommu.DetachDevicePasid(a, x, 3);
        f.Iommu.DetachDevicePasid(a, y, 4);
        Assert.Equal(0, ((DmarDomain)a).DidOn(0));
        f.Iommu.DomainFree(a);
    }

    [Fact]
    public void Refusals_return_the_drivers_errno_and_leave_entries_slots_and_dids_unchanged()
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 20);
        PciDevice plain = f.AddDevice("0000:00:03.0");
        IDomain a = Mapped(f, PaA);
        uint[] probes = [0, 1, (1u << 20) - 1, 1u << 20, uint.MaxValue];
        string Snapshot() => string.Join(';', probes.Select(p => string.Join(',', Entry(f, dev, p)) + "/" + string.Join(',', Entry(f, plain, p))))
            + $" did={((DmarDomain)a).DidOn(0)} ctx-pasid={dev.PasidEnabled}";
        string before = Snapshot();

        Assert.Equal(Errno.EBUSY, f.Iommu.AttachDevicePasid(a, dev, 0)); // RID2PASID's entry is present
        Assert.Equal(Errno.ENODEV, f.Iommu.AttachDevicePasid(a, dev, 1u << 20)); // beyond the PASID table
        Assert.Equal(Errno.ENODEV, f.Iommu.AttachDevicePasid(a, dev, uint.MaxValue));
        Assert.Equal(Errno.EOPNOTSUPP, f.Iommu.AttachDevicePasid(a, plain, 1)); // no PASID capability

        Assert.Equal(before, Snapshot());
        foreach (uint p in probes)
        {
            Assert.Equal(Errno.None, f.Iommu.GetDomainForDevPasid(dev, p, DomainType.Blocked, out IDomain? got));
            Assert.Null(got);
        }

        f.AssertDma(dev, null, Iova, 0);
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(a, dev, (1u << 20) - 1)); // the last PASID works
        f.AssertDma(dev, (1u << 20) - 1, Iova, PaA);
    }

    // 5.15 domain_attach_iommu gives every domain a DID on its first reference to a unit, the scalable-mode
    // pass-through domain too, though its PASID entries carry FLPT_DEFAULT_DID (spec §2.4); the model used to give it
    // DID 1 without allocating, so every later domain's DID came out one lower than the kernel's.
    [Fact]
    public void The_scalable_mode_identity_domain_takes_a_did_of_its_own_while_its_entries_carry_flpt_default_did()
    {
        using DriverBed f = New("Sm48");
        PciDevice a = f.AddDevice("0000:00:02.0", pasidWidth: 20);
        PciDevice b = f.AddDevice("0000:00:03.0", pasidWidth: 20);
        IDomain identity = f.Iommu.DomainAllocType(f.Pci, DomainType.Identity)!;
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(identity, a));

        Assert.Equal(2, ((DmarDomain)identity).DidOn(0)); // DIDs 0 and 1 are reserved in scalable mode
        var pe = PasidEntry.Load(f.Platform.Memory, EntryAddress(a, 0)); // RID2PASID
        Assert.Equal(PasidPgtt.PassThrough, pe.Pgtt);
        Assert.Equal(Dmar.FlptDefaultDid, pe.DomainId);

        IDomain next = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(next, b));
        Assert.Equal(3, ((DmarDomain)next).DidOn(0));
        Assert.Equal(PasidPgtt.SecondLevel, PasidEntry.Load(f.Platform.Memory, EntryAddress(b, 0)).Pgtt);
        Assert.Equal(3, PasidEntry.Load(f.Platform.Memory, EntryAddress(b, 0)).DomainId);

        // The identity domain's last device leaves: its DID is free again and the next domain takes it.
        f.Iommu.DetachDevice(identity, a);
        Assert.Equal(0, ((DmarDomain)identity).DidOn(0));
        IDomain third = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(third, a));
        Assert.Equal(2, ((DmarDomain)third).DidOn(0));
    }

    [Fact]
    public void The_identity_domain_attached_to_a_pasid_passes_dma_through()
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 20);
        IDomain identity = f.Iommu.DomainAllocType(f.Pci, DomainType.Identity)!;

        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(identity, dev, 6));

        var pe = PasidEntry.Load(f.Platform.Memory, EntryAddress(dev, 6));
        Assert.Equal(PasidPgtt.PassThrough, pe.Pgtt);
        Assert.Equal(Dmar.FlptDefaultDid, pe.DomainId);
        f.AssertDma(dev, 6, PaA + 0x40, PaA + 0x40);
        f.AssertDma(dev, 7, PaA + 0x40, 0);

        f.Iommu.DetachDevicePasid(identity, dev, 6);
        f.AssertDma(dev, 6, PaA + 0x40, 0, "after detach");
    }

    [Fact]
    public void A_legacy_mode_unit_refuses_with_EOPNOTSUPP()
    {
        using DriverBed f = New("Legacy48");
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 20);
        IDomain a = Mapped(f, PaA);

        Assert.Equal(Errno.EOPNOTSUPP, f.Iommu.AttachDevicePasid(a, dev, 1));
        Assert.Equal(0, ((DmarDomain)a).DidOn(0));
    }

    [Fact]
    public void Aux_and_attached_pasids_on_one_device_never_share_a_number()
    {
        using DriverBed f = New("Sm48");
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain auxA = Mapped(f, PaA), b = Mapped(f, PaB);
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(auxA, parent));
        uint pa = (uint)f.Iommu.AuxGetPasid(auxA, parent);
        ulong[] auxEntry = Entry(f, parent, pa);

        // The aux domain's PASID: the driver finds its entry present.
        Assert.Equal(Errno.EBUSY, f.Iommu.AttachDevicePasid(b, parent, pa));
        Assert.Equal(auxEntry, Entry(f, parent, pa));
        f.AssertDma(parent, pa, Iova, PaA, "the aux domain keeps its PASID");

        // A global PASID is never an aux domain's, and an attached one is never handed to an aux domain.
        uint g = f.Iommu.AllocGlobalPasid(parent);
        Assert.NotEqual(pa, g);
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(b, parent, g));
        uint raw = g + 1; // chosen by the caller without allocating it
        IDomain c = Mapped(f, PaB + M2);
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(c, parent, raw));
        IDomain auxD = Mapped(f, PaA + M2);
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(auxD, parent));
        uint pd = (uint)f.Iommu.AuxGetPasid(auxD, parent);
        Assert.DoesNotContain(pd, new[] { pa, g, raw });

        f.AssertDma(parent, pa, Iova, PaA);
        f.AssertDma(parent, g, Iova, PaB);
        f.AssertDma(parent, raw, Iova, PaB + M2);
        f.AssertDma(parent, pd, Iova, PaA + M2);

        f.Iommu.DetachDevicePasid(b, parent, g);
        f.AssertDma(parent, g, Iova, 0);
        f.AssertDma(parent, pa, Iova, PaA);
        f.AssertDma(parent, pd, Iova, PaA + M2);
    }

    [Fact]
    public void Pasid_attachments_survive_a_change_of_the_rid_domain()
    {
        using DriverBed f = New("Sm48");
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 20);
        IDomain rid = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(rid, dev)); // e.g. VFIO before the PASID attach
        IDomain a = Mapped(f, PaA);
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(a, dev, 2));
        f.AssertDma(dev, 2, Iova, PaA);

        f.Iommu.DetachDevice(rid, dev); // back to the default domain: a new PASID table

        f.AssertDma(dev, 2, Iova, PaA, "the PASID attachment was re-programmed");
        Assert.Equal(((DmarDomain)a).DidOn(0), PasidEntry.Load(f.Platform.Memory, EntryAddress(dev, 2)).DomainId);
        Assert.Equal(Errno.EBUSY, f.Iommu.AttachDevice(rid, dev)); // and the group cannot be claimed meanwhile
        f.Iommu.DetachDevicePasid(a, dev, 2);
        f.AssertDma(dev, 2, Iova, 0);
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(rid, dev));
    }

    [Fact]
    public void An_aux_detach_never_clears_a_pasid_attached_after_the_aux_entry_was_lost()
    {
        using DriverBed f = New("Sm48");
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain aux = Mapped(f, PaA), b = Mapped(f, PaB);
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(aux, parent));
        uint p = (uint)f.Iommu.AuxGetPasid(aux, parent);

        // A RID-domain change frees the PASID table and the aux entry with it (5.15); the aux link stays.
        Assert.Equal(Errno.None, f.Iommu.SetDevAttr(parent, IommuDevAttr.AuxdDisable));
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(f.Unmanaged(), parent));
        Assert.Equal(Errno.None, f.Iommu.SetDevAttr(parent, IommuDevAttr.AuxdEnable));
        f.AssertDma(parent, p, Iova, 0, "the aux entry went with the old PASID table");
        Assert.Equal(Errno.None, f.Iommu.AttachDevicePasid(b, parent, p)); // the number's entry is free on this device

        f.Iommu.DetachDeviceAux(aux, parent);

        f.AssertDma(parent, p, Iova, PaB, "the aux detach left the attached PASID's entry alone");
    }

    // Random PASID attach/detach, aux attach/detach, map/unmap and DMA on two aux-capable devices
    // (each its own group) against a model: the slot owner per (device, PASID) and the aux users per
    // (device, domain). A DMA with a PASID succeeds iff the model's domain for it maps the IOVA, and
    // lands on that domain's page; attaches fail exactly when the PASID is taken on that device.
    [Fact]
    public void Dma_follows_a_model_of_pasid_slots_and_aux_attachments_over_random_sequences()
    {
        const int Doms = 3, Iovas = 3;
        Gen.Select(Gen.Int[0, 6], Gen.Int[0, 1], Gen.Int[0, Doms - 1], Gen.UInt[1, 5], Gen.Int[0, Iovas - 1]).Array[1, 45].Sample(steps =>
        {
            using var f = new DriverBed(VtdConfig.ScalableMode48Bit, memory: SmallMemory);
            PciDevice[] devs = [f.AuxParent("0000:00:02.0"), f.AuxParent("0000:00:03.0")];
            IDomain[] doms = [.. Enumerable.Range(0, Doms).Select(_ => f.Unmanaged())];
            ulong Page(int d, int i) => PaA + ((ulong)d * M2) + ((ulong)i * K4);
            ulong IovaOf(int i) => Iova + ((ulong)i * K4);
            var mapped = new bool[Doms, Iovas];
            for (int d = 0; d < Doms; d++)
            {
                for (int i = 0; i < Iovas; i++)
                {
                    Assert.Equal(Errno.None, f.Iommu.Map(doms[d], IovaOf(i), Page(d, i), K4, RW));
                    mapped[d, i] = true;
                }
            }

            var slots = new Dictionary<(int Dev, uint Pasid), int>();
            var aux = new Dictionary<(int Dev, int Dom), int>();
            uint AuxPasid(int d) => ((DmarDomain)doms[d]).DefaultPasid;
            int? Owner(int dev, uint pasid)
            {
                if (slots.TryGetValue((dev, pasid), out int d))
                {
                    return d;
                }

                foreach (((int xDev, int xDom), _) in aux)
                {
                    if (xDev == dev && AuxPasid(xDom) == pasid)
                    {
                        return xDom;
                    }
                }

                return null;
            }

            foreach ((int op, int dev, int dom, uint pasid, int iova) in steps)
            {
                switch (op)
                {
                    case 0:
                    {
                        Errno expected = Owner(dev, pasid) is null ? Errno.None : Errno.EBUSY;
                        Assert.Equal(expected, f.Iommu.AttachDevicePasid(doms[dom], devs[dev], pasid));
                        if (expected == Errno.None)
                        {
                            slots[(dev, pasid)] = dom;
                        }

                        break;
                    }

                    case 1:
                        if (slots.TryGetValue((dev, pasid), out int held))
                        {
                            f.Iommu.DetachDevicePasid(doms[held], devs[dev], pasid);
                            slots.Remove((dev, pasid));
                        }

                        break;
                    case 2:
                    {
                        uint known = AuxPasid(dom);
                        Errno err = f.Iommu.AttachDeviceAux(doms[dom], devs[dev]);
                        uint p = AuxPasid(dom);
                        if (known == 0)
                        {
                            Assert.Equal(Errno.None, err); // a fresh aux PASID never collides
                            Assert.DoesNotContain(slots.Keys, k => k.Pasid == p);
                        }
                        else
                        {
                            bool taken = aux.ContainsKey((dev, dom)) ? false : Owner(dev, p) is not null;
                            Assert.Equal(taken ? Errno.EBUSY : Errno.None, err);
                        }

                        if (err == Errno.None)
                        {
                            aux[(dev, dom)] = aux.GetValueOrDefault((dev, dom)) + 1;
                        }

                        break;
                    }

                    case 3:
                        if (aux.TryGetValue((dev, dom), out int users))
                        {
                            f.Iommu.DetachDeviceAux(doms[dom], devs[dev]);
                            if (users == 1)
                            {
                                aux.Remove((dev, dom));
                            }
                            else
                            {
                                aux[(dev, dom)] = users - 1;
                            }
                        }

                        break;
                    case 4:
                        if (mapped[dom, iova])
                        {
                            Assert.Equal(K4, f.Iommu.Unmap(doms[dom], IovaOf(iova), K4));
                        }
                        else
                        {
                            Assert.Equal(Errno.None, f.Iommu.Map(doms[dom], IovaOf(iova), Page(dom, iova), K4, RW));
                        }

                        mapped[dom, iova] = !mapped[dom, iova];
                        break;
                    default:
                    {
                        // DMA with the step's PASID, or with the PASID of the step's domain on that device.
                        uint p = op == 5 ? pasid : AuxPasid(dom) is uint ap and not 0 ? ap : pasid;
                        int? owner = Owner(dev, p);
                        ulong expected = owner is int o && mapped[o, iova] ? Page(o, iova) : 0;
                        f.AssertDma(devs[dev], p, IovaOf(iova) + 8, expected == 0 ? 0 : expected + 8, $"device {dev} PASID {p}");
                        break;
                    }
                }
            }
        });
    }
}
