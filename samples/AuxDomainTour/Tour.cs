using System.Globalization;
using System.Text;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Mtty;
using SiovAccel;
using Vfio.Mdev;
using Vfio.Type1;
using Vfio.Type1.Uapi;

namespace AuxDomainTour;

/// <summary>
/// The tour: builds the embedded default machine, walks the six steps, checks each against the
/// kernel's behaviour.
/// </summary>
internal sealed class Tour : IDisposable
{
    private const ulong Page = Sizes.Page;
    private const ulong RamIova = 0x10_0000;         // every guest's RAM at one IOVA (GPA 1 MiB)
    private const int RamPages = 16;
    private const ulong SecretIova = 0x4000_0000;    // mapped by guest A only
    private const ulong UnmappedIova = 0x7000_0000;  // mapped by nobody
    private const string ParentBdf = "0000:00:04.0";
    private const int PasidRegister = 0x08;
    private const uint ReadWrite =
        VfioUapi.VFIO_DMA_MAP_FLAG_READ | VfioUapi.VFIO_DMA_MAP_FLAG_WRITE;

    private readonly Report _r;
    private readonly bool _legacy;
    private readonly bool _firstLevel;
    private readonly bool _pasidAttach;
    private readonly string? _graphPath;
    private readonly Platform _platform;
    private readonly PciBus _pci;
    private readonly VtdUnit _unit;
    private readonly IntelIommu _driver;
    private readonly VfioCore _vfio;
    private readonly MdevCore _mdev;
    private readonly HostPageAllocator _pages;
    private readonly PciDevice _parent;
    private readonly SiovAccelDriver _accel;
    private readonly MttyDriver _mtty;
    private readonly List<MdevDevice> _adis = [];
    private readonly List<Guest> _guests = [];
    private MdevDevice? _mttyDev;
    private int _expectedFaults;

    private Tour(TourOptions options, string? graphPath)
    {
        bool legacy = options.Legacy;
        _legacy = legacy;
        _firstLevel = options.FirstLevel;
        _pasidAttach = options.PasidAttach;
        _graphPath = graphPath;
        _r = new Report(legacy ? "legacy" : "scalable");
        _platform = new Platform(new PlatformOptions
        {
            MemorySize = 8 * Sizes.GiB,
            TableMemorySize = 64 * Sizes.MiB,
        });
        _pci = _platform.AddPciBus();
        VtdConfig config = legacy ? VtdConfig.Legacy48Bit
            : _firstLevel ? VtdConfig.ScalableModeFirstLevel48Bit : VtdConfig.ScalableMode48Bit;
        _unit = new VtdUnit(_platform.Memory, config);
        _pci.AddDmaRemapper(_unit, includeAll: true);

        // 5.15's rule: with ECAP.FLTS on every unit, every domain (aux ones too) is first level.
        var driverOptions = new IntelIommuOptions
        {
            ScalableMode = !legacy,
            FirstLevel = _firstLevel
                ? FirstLevelPolicy.AllWhenEveryUnitHasFlts
                : new IntelIommuOptions().FirstLevel,
        };
        _driver = new IntelIommu(_platform, driverOptions, _unit);
        _pci.SetIommuOps(_driver).ThrowIfError();
        _vfio = new VfioCore(_platform, new VfioType1Options { AllowUnsafeInterrupts = true });
        _pages = HostPageAllocator.ForPlatform(_platform, 4 * Sizes.GiB, 256 * Sizes.MiB);
        _mdev = new MdevCore(_platform);
        _parent = _pci.AddDevice(new PciDeviceSpec(ParentBdf)
        {
            PasidWidth = 20,
            ScalableIov = true,
            Acs = true,
            DeviceId = 0x0b25,
        });
        _accel = new SiovAccelDriver(
            _platform.Iommu,
            _parent,
            adiCount: 4,
            _pasidAttach ? SiovAccelMode.PasidAttach : SiovAccelMode.Aux);
        _mtty = new MttyDriver(_platform.Memory, _vfio);
    }

    private IommuCore Iommu => _platform.Iommu;

    /// <summary>Runs every step; with <paramref name="graphPath"/> writes the DOT graph.</summary>
    public static Report Run(TourOptions options, string? graphPath = null)
    {
        using var tour = new Tour(options, graphPath);
        try
        {
            tour.Step1Hardware();
            tour.Step2Mdevs();
            tour.Step3Containers();
            tour.Step4Dma();
            tour.Step5TranslationStructures();
            ProcessesSection.Run(tour._r);
            tour.Step6Summary();
        }
#pragma warning disable CA1031 // the report must say what broke, whatever it is
        catch (Exception e)
#pragma warning restore CA1031
        {
            tour._r.Expect(false, $"the tour stopped: {e.GetType().Name}: {e.Message}");
        }

        return tour._r;
    }

    public void Dispose() => _platform.Dispose();

    // ---------------------------------------------------------------------------------------------
    private void Step1Hardware()
    {
        _r.Section("A VT-d unit and a Scalable-IOV parent device");
        IntelIommuUnit u = _driver.Units[0];
        Table t = _r.Table(
            "unit", "DMAR unit", "mode", "PASID", "AGAW", "domain ids", "invalidation");
        t.Row(
            "dmar0",
            u.ScalableMode ? "scalable" : "legacy",
            u.PasidSupported ? "yes (ECAP.PASID)" : "no",
            $"{u.Agaw} ({Levels(u.Agaw)}-level tables)",
            u.NumDomains,
            u.QueuedInvalidation ? "queued" : "register-based");
        _r.Expect(
            _driver.ScalableModeSupport == !_legacy && _driver.PasidModeSupport == !_legacy,
            _legacy
                ? "intel_iommu=sm_off: scalable_mode_support() and pasid_mode_support() are false"
                : "intel_iommu=sm_on: scalable_mode_support() and pasid_mode_support() are true");
        _r.Fact("unit.scalable", u.ScalableMode);
        _r.Fact("unit.first_level", _firstLevel);
        _r.Fact("pasid_attach", _pasidAttach);
        if (_firstLevel)
        {
            var probe = (DmarDomain)Iommu.DomainAlloc(_pci)!;
            bool fl = probe.UseFirstLevel;
            Iommu.DomainFree(probe);
            _r.Expect(
                _unit.Config.FirstLevelTranslation && fl,
                "ECAP.FLTS on every unit: 5.15's rule makes every new domain first level "
                + "(IA-32e tables, PGTT=first-level), UNMANAGED ones for aux included");
        }

        Table d = _r.Table(
            "parent", "device", "requester id", "PASID capability", "Scalable-IOV DVSEC", "driver",
            "ADIs");
        d.Row(
            _parent.Name,
            $"0x{_parent.RequesterId:x4}",
            $"{_parent.PasidWidth} bits",
            _parent.HasScalableIovDvsec ? "yes" : "no",
            _accel.DriverName,
            _accel.AdiCount);
        _r.Expect(
            _mdev.RegisterDevice(_parent, _accel) == Errno.None,
            $"mdev_register_device({_parent.Name}, siov_accel) registers the parent");

        Iommu.GetDevAttr(_parent, IommuDevAttr.AuxdCapability, out bool capable).ThrowIfError();
        _r.Expect(
            capable == !_legacy,
            $"IOMMU_DEV_ATTR_AUXD_CAPABILITY of {_parent.Name} = {capable}" + (_legacy
                ? " (intel_iommu_dev_has_feat(AUX) needs scalable mode with PASID)"
                : " (PASID capability + Scalable-IOV DVSEC + scalable mode)"));
        _r.Fact("parent.auxd_capability", capable);

        if (_pasidAttach)
        {
            // 6.2 removed aux domains: the accelerator's PASIDs need no feature switched on.
            _r.Expect(
                !Iommu.DevFeatureEnabled(_parent, IommuDevFeature.Aux),
                "PASID attach (6.2): nothing enables IOMMU_DEV_FEAT_AUX; the accelerator will "
                + "attach each ADI's domain to a PASID of its own");
            return;
        }

        Errno en = Iommu.SetDevAttr(_parent, IommuDevAttr.AuxdEnable);
        string why = ErrorDetail.LastMessage ?? "";
        Iommu.GetDevAttr(_parent, IommuDevAttr.AuxdEnabled, out bool enabled).ThrowIfError();
        if (_legacy)
        {
            _r.Expect(
                en == Errno.EINVAL && !enabled,
                $"IOMMU_DEV_ATTR_AUXD_ENABLE -> -{en} ({why}); AUXD_ENABLED = {enabled}");
        }
        else
        {
            VtdImage image = _driver.ExportImage();
            bool paside = image.ContextEntryAddress(_parent.RequesterId) is ulong ce
                && (image.ReadUInt64(ce) & VtdFormat.ScalableContextPaside) != 0;
            _r.Expect(
                en == Errno.None && enabled && paside && _parent.PasidEnabled,
                "IOMMU_DEV_ATTR_AUXD_ENABLE -> 0: PASIDE set in the device's scalable context "
                + "entry, "
                + "PASID enabled on the device; AUXD_ENABLED = true");
        }

        _r.Fact("parent.auxd_enable_errno", en.ToKernelReturn());
    }

    // ---------------------------------------------------------------------------------------------
    private void Step2Mdevs()
    {
        _r.Section("Mediated devices: three ADIs ("
            + (_pasidAttach ? "iommu_alloc_global_pasid" : "mdev_set_iommu_device")
            + ") and an mtty without an IOMMU device");
        _r.Expect(
            _mtty.Register(_mdev) == Errno.None,
            "mdev_register_device(mtty) registers the mtty-like parent");
        MdevType wq = _mdev.FindParent(_parent)!.FindType("siov_accel-wq")!;
        Table t = _r.Table(
            "mdevs", "mdev", "type", "parent", "create", "iommu device", "isolation");
        for (int i = 1; i <= 3; i++)
        {
            var uuid = Guid.Parse($"83b8f4f2-509f-382f-3c1e-e6bfe0fa100{i}");
            Errno e = _mdev.Create(wq, uuid, out MdevDevice? m);
            string why = ErrorDetail.LastMessage ?? "";
            if (_legacy)
            {
                t.Row(Short(uuid), wq.Name, _parent.Name, $"-{e}", "-", "-");
                _r.Expect(
                    e == Errno.EINVAL && m is null,
                    $"create of ADI {i} -> -{e}: the vendor driver cannot enable AUX ({why})");
                continue;
            }

            string wqName = $"{DomainWord} domain (wq{SiovAccelDriver.AdiOf(m!).Index})";
            string iommuDevice = m!.GetIommuDevice()?.Name ?? "-";
            t.Row(Short(m.Uuid), wq.Name, _parent.Name, "0", iommuDevice, wqName);
            if (_pasidAttach)
            {
                uint? global = SiovAccelDriver.AdiOf(m).AllocatedPasid;
                _r.Expect(
                    e == Errno.None && m.GetIommuDevice() is null && global is > 0,
                    $"ADI {i}: PASID {global} from iommu_alloc_global_pasid({_parent.Name}); "
                    + "no mdev_set_iommu_device");
                _adis.Add(m);
                continue;
            }

            _r.Expect(
                e == Errno.None && m.GetIommuDevice() == _parent,
                $"ADI {i}: mdev_set_iommu_device(mdev, {_parent.Name}), "
                + $"own IOMMU group {m.IommuGroup?.Id}");
            _adis.Add(m);
        }

        MdevType mt = _mdev.FindParent(_mtty.ParentDevice)!.FindType("mtty-1")!;
        var mttyUuid = Guid.Parse("83b8f4f2-509f-382f-3c1e-e6bfe0fa2001");
        Errno me = _mdev.Create(mt, mttyUuid, out _mttyDev);
        t.Row(
            _mttyDev is null ? "-" : Short(_mttyDev.Uuid),
            mt.Name,
            _mtty.ParentDevice.Name,
            $"{me.ToKernelReturn()}",
            _mttyDev?.GetIommuDevice()?.Name ?? "(none)",
            "external domain (vendor pins)");
        _r.Expect(
            me == Errno.None && _mttyDev!.GetIommuDevice() is null,
            "the mtty-like mdev has no IOMMU device: isolation is the vendor driver's");
        _r.Fact("mdevs.adis", _adis.Count);
    }

    // ---------------------------------------------------------------------------------------------
    private void Step3Containers()
    {
        _r.Section(
            $"A VFIO type1 container per guest: {DomainWord} domains and the external domain");
        if (_legacy)
        {
            IDomain dom = Iommu.DomainAlloc(_pci)!;
            Errno aux = Iommu.AttachDeviceAux(dom, _parent);
            string why = ErrorDetail.LastMessage ?? "";
            _r.Expect(
                aux == Errno.EPERM,
                $"iommu_aux_attach_device(UNMANAGED domain, {_parent.Name}) -> -{aux} ({why})");
            Iommu.DomainFree(dom);
            _r.Fact("legacy.aux_attach_errno", aux.ToKernelReturn());
        }

        string[] names = ["A", "B", "C"];
        for (int i = 0; i < names.Length; i++)
        {
            var members = new List<MdevDevice>();
            if (i < _adis.Count)
            {
                members.Add(_adis[i]);
            }

            if (i == 2 && _mttyDev is not null)
            {
                members.Add(_mttyDev);
            }

            if (members.Count == 0)
            {
                _r.Note($"guest {names[i]}: no device to assign (no ADI could be created)");
                continue;
            }

            var g = new Guest(names[i], new ProcessAddressSpace(_pages, $"qemu-{names[i]}"));
            g.Container = _vfio.OpenContainer(g.Proc, out _);
            foreach (MdevDevice m in members)
            {
                Assign(g, m);
            }

            _guests.Add(g);
        }

        Table t = _r.Table(
            "containers", "guest", "process", "group", "mdev", "attached as", "PASID",
            "ADI PASID register");
        foreach (Guest g in _guests)
        {
            if (g.Adi is not null)
            {
                byte[] reg = new byte[4];
                g.AdiFile!.MdevFile!.Read(reg, PasidRegister);
                uint programmed = BitConverter.ToUInt32(reg);
                string how = $"{DomainWord} domain on {_parent.Name}";
                int group = g.Adi.IommuGroup!.Id;
                t.Row(g.Name, g.Proc.Name, group, Short(g.Adi.Uuid), how, g.Pasid, programmed);
                if (_pasidAttach)
                {
                    bool held = Iommu.GetDomainForDevPasid(
                        _parent, g.Pasid, DomainType.Blocked, out IDomain? pd) == Errno.None
                        && pd == g.Domain && g.Domain is not null;
                    _r.Expect(
                        g.Pasid > 0 && programmed == g.Pasid && held
                            && g.Adi.GetIommuDevice() is null,
                        $"guest {g.Name}: PASID {g.Pasid} from iommu_alloc_global_pasid at create; "
                        + "on open iommu_attach_device_pasid put the mdev's domain on it and the "
                        + "ADI is programmed with it (no aux, no IOMMU device)");
                    continue;
                }

                bool auxdId = g.Domain is not null
                    && Iommu.DomainGetAttr(g.Domain, DomainAttr.AuxdId, out uint id) == Errno.None
                    && id == g.Pasid;
                _r.Expect(
                    g.Pasid > 0 && programmed == g.Pasid && auxdId,
                    $"guest {g.Name}: type1 aux-attached a new domain to {_parent.Name} "
                    + $"(mdev_set_iommu_domain); DOMAIN_ATTR_AUXD_ID = {g.Pasid}, "
                    + "the ADI is programmed with it on open");
            }

            if (g.Mtty is not null)
            {
                int group = g.Mtty.IommuGroup!.Id;
                t.Row(g.Name, g.Proc.Name, group, Short(g.Mtty.Uuid), "external domain", "-", "-");
                _r.Expect(
                    g.Backend.HasExternalDomain && g.Mtty.GetIommuDomain() is null,
                    $"guest {g.Name}: the mtty group joins the container's external domain "
                    + "(no IOMMU domain, pinning through VFIO)");
            }
        }

        if (!_legacy)
        {
            uint[] pasids = [.. _guests.Select(g => g.Pasid)];
            // PASID attach: type1 sees mdevs without an IOMMU device, i.e. its external domain.
            _r.Expect(
                pasids.Distinct().Count() == 3
                    && _guests.Select(g => g.Domain).Distinct().Count() == 3
                    && _guests.All(g => g.Backend.Domains.Count == (_pasidAttach ? 0 : 1))
                    && (!_pasidAttach || _guests.All(g => g.Backend.HasExternalDomain)),
                $"three containers, three {DomainWord} domains on one parent, three PASIDs: "
                + string.Join(", ", pasids)
                + (_pasidAttach ? " (type1 keeps each group in its external domain)" : ""));
            _r.Expect(
                Iommu.GetDomainForDev(_parent) == _parent.IommuGroup!.DefaultDomain
                    && (!_pasidAttach || !Iommu.DevFeatureEnabled(_parent, IommuDevFeature.Aux)),
                "the parent itself stays in its default domain ("
                + (_pasidAttach ? "PASID attach" : "aux attach")
                + $" bypasses the group); aux PASIDs in use: {_driver.PasidsInUse}");
            _r.Fact("pasids", pasids);
            if (_firstLevel)
            {
                _r.Expect(
                    _guests.All(x => x.Domain is DmarDomain { UseFirstLevel: true }),
                    "every guest's domain is first level: its IOVAs are walked from FLPTR "
                    + "through IA-32e tables");
            }
        }
    }

    // Registers m with VFIO, puts its group in g's container, opens its device fd (as QEMU does).
    private void Assign(Guest g, MdevDevice m)
    {
        int group = m.IommuGroup!.Id;
        _vfio.RegisterDevice(m).ThrowIfError($"register {m.Name} with VFIO");
        _vfio.OpenGroup(g.Proc, group, out VfioGroup? grp, out _)
            .ThrowIfError($"open group {group}");
        grp!.SetContainer(g.Container).ThrowIfError("VFIO_GROUP_SET_CONTAINER");
        if (g.Container.Backend is null)
        {
            g.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU)
                .ThrowIfError("VFIO_SET_IOMMU(TYPE1v2)");
        }

        if (_pasidAttach && m != _mttyDev)
        {
            // The 6.2 way: the owner of the mdev's address space hands it a domain
            // (mdev_set_iommu_domain); the accelerator attaches it to the ADI's PASID on open.
            m.SetIommuDomain(Iommu.DomainAlloc(_pci));
        }

        grp.GetDeviceFd(g.Proc, m.Name, out VfioDeviceFile? f, out _)
            .ThrowIfError($"VFIO_GROUP_GET_DEVICE_FD({m.Name})");
        if (m == _mttyDev)
        {
            g.Mtty = m;
            g.MttyFile = f;
            return;
        }

        g.Adi = m;
        g.AdiFile = f;
        g.Domain = m.GetIommuDomain();
        g.Pasid = g.Domain is null ? 0
            : _pasidAttach ? SiovAccelDriver.AdiOf(m).AllocatedPasid ?? 0
            : (uint)Math.Max(0, Iommu.AuxGetPasid(g.Domain, _parent));
    }

    // ---------------------------------------------------------------------------------------------
    private void Step4Dma()
    {
        _r.Section("MAP_DMA of guest memory; ADI DMA lands in its own guest's pages; "
            + "wrong DMA faults");
        Table maps = _r.Table(
            "map_dma", "guest", "vaddr", "iova", "size", "host pages", "locked_vm",
            "iova_to_phys agrees");
        foreach (Guest g in _guests)
        {
            MapGuestRam(g, maps);
        }

        // Each ADI moves 32 bytes from RAM page 0 to page 1 with a completion record in page 2.
        var adiGuests = _guests.Where(g => g.Adi is not null).ToList();
        if (adiGuests.Count > 0)
        {
            AdiDma(adiGuests);
        }

        Guest? c = _guests.FirstOrDefault(g => g.Mtty is not null);
        if (c is not null)
        {
            MttyDma(c);
        }

        WrongDma();
    }

    private void MapGuestRam(Guest g, Table maps)
    {
        g.Ram = g.Proc.Mmap(RamPages * Page);
        for (int p = 0; p < RamPages; p++)
        {
            byte[] fill = new byte[Page];
            Array.Fill(fill, (byte)((g.Name[0] << 4) + p));
            g.Proc.Write(g.Ram + ((ulong)p * Page), fill).ThrowIfError();
        }

        g.Proc.Write(g.Ram, Payload(g)).ThrowIfError();
        var map = new VfioIommuType1DmaMap(32, ReadWrite, g.Ram, RamIova, RamPages * Page);
        Errno e = g.Container.MapDma(map);
        _r.Expect(
            e == Errno.None,
            $"guest {g.Name}: VFIO_IOMMU_MAP_DMA(iova 0x{RamIova:x}, {RamPages * Page / 1024} KiB)"
            + $" -> {e.ToKernelReturn()}");
        if (g.Name == "A" && g.Domain is not null)
        {
            g.Secret = g.Proc.Mmap(Page);
            g.Proc.Write(g.Secret, "guest A's secret"u8).ThrowIfError();
            var secret = new VfioIommuType1DmaMap(32, ReadWrite, g.Secret, SecretIova, Page);
            _r.Expect(
                g.Container.MapDma(secret) == Errno.None,
                $"guest A also maps one page at iova 0x{SecretIova:x} (only A)");
        }

        if (_pasidAttach && g.Domain is not null)
        {
            // No type1 IOMMU domain to map into: the domain's owner maps the guest's pages itself.
            bool mapped = true;
            foreach (ulong iova in Enumerable.Range(0, RamPages)
                .Select(p => RamIova + ((ulong)p * Page))
                .Concat(g.Secret != 0 ? [SecretIova] : []))
            {
                mapped &= Iommu.Map(g.Domain, iova, HostPa(g, iova)!.Value, Page,
                    IommuProt.Read | IommuProt.Write) == Errno.None;
                g.OwnMapped++;
            }

            _r.Expect(
                mapped,
                $"guest {g.Name}: the owner maps its {g.OwnMapped} pages into the mdev's domain "
                + "with iommu_map (type1 pins nothing for the external domain)");
        }

        bool agree = true;
        for (int p = 0; p < RamPages && g.Domain is not null; p++)
        {
            ulong iova = RamIova + ((ulong)p * Page);
            agree &= HostPa(g, iova) is ulong pa && Iommu.IovaToPhys(g.Domain, iova) == pa;
        }

        string hostPages = HostPa(g, RamIova) is ulong first ? $"0x{first:x}.." : "?";
        string agrees = g.Domain is null ? "- (no IOMMU domain)" : agree ? "yes" : "NO";
        string size = $"{RamPages * Page / 1024} KiB";
        string vaddr = $"0x{g.Ram:x}", iovaText = $"0x{RamIova:x}";
        maps.Row(g.Name, vaddr, iovaText, size, hostPages, g.Proc.LockedVm, agrees);
        if (g.Domain is not null && !_pasidAttach)
        {
            long pages = g.Backend.Mappings.Sum(m => (long)(m.Size / Page));
            _r.Expect(
                agree && g.Proc.LockedVm == pages,
                $"guest {g.Name}: every page pinned and mapped in its aux domain: "
                + $"iova_to_phys = the process's host page; locked_vm = {g.Proc.LockedVm}");
        }
        else
        {
            _r.Expect(
                g.Proc.LockedVm == 0 && (g.Domain is null || agree),
                $"guest {g.Name}: external domain only — nothing pinned or mapped at MAP_DMA "
                + "(pinned on demand by the vendor)"
                + (g.Domain is null ? "" : "; iova_to_phys of the mdev's domain = the host page"));
        }
    }

    private void AdiDma(List<Guest> adiGuests)
    {
        _r.Note("Each ADI executes a memmove descriptor (page 0 -> page 1, completion record in "
            + "page 2), tagged with its PASID:");
        Table dma = _r.Table(
            "adi_dma", "guest", "ADI", "PASID", "dst iova", "host page", "landed", "completion");
        foreach (Guest g in adiGuests)
        {
            ulong completion = RamIova + (2 * Page);
            Submit(g, AccelDescriptor.Memmove(RamIova, RamIova + Page, 32, completion));
            byte[] host = new byte[32];
            ulong pa = HostPa(g, RamIova + Page) ?? 0;
            _platform.Memory.Read(pa, host);
            byte[] seen = new byte[32];
            g.Proc.Read(g.Ram + Page, seen).ThrowIfError();
            byte status = Completion(g).Status;
            bool landed = host.AsSpan().SequenceEqual(Payload(g))
                && seen.AsSpan().SequenceEqual(Payload(g));
            dma.Row(
                g.Name,
                $"wq{SiovAccelDriver.AdiOf(g.Adi!).Index}",
                g.Pasid,
                $"0x{RamIova + Page:x}",
                $"0x{pa:x}",
                landed ? Encoding.ASCII.GetString(host).TrimEnd('\0') : "NO",
                status == Adi.StatusSuccess ? "success" : $"0x{status:x2}");
            _r.Expect(
                landed && status == Adi.StatusSuccess,
                $"guest {g.Name}: the bytes are in guest {g.Name}'s page (host 0x{pa:x}), "
                + "completion = success");
        }

        int pagesUsed = adiGuests.Select(g => HostPa(g, RamIova + Page)).Distinct().Count();
        bool apart = pagesUsed == adiGuests.Count
            && adiGuests.All(g => adiGuests.Where(o => o != g)
                .All(o => !ReadProc(o, o.Ram + Page, 32).SequenceEqual(Payload(g))));
        _r.Expect(apart, "same IOVA in every guest, different host pages: "
            + "no guest's page holds another guest's bytes");

        // A second descriptor re-reads page 1: the unit's IOTLB already holds it.
        long hitsBefore = _unit.Statistics.IotlbHits;
        foreach (Guest g in adiGuests)
        {
            ulong completion = RamIova + (2 * Page);
            ulong dst = RamIova + (3 * Page);
            Submit(g, AccelDescriptor.Memmove(RamIova + Page, dst, 32, completion));
        }

        bool copied = adiGuests.All(g =>
            ReadProc(g, g.Ram + (3 * Page), 32).SequenceEqual(Payload(g))
            && Completion(g).Status == Adi.StatusSuccess);
        _r.Expect(
            copied && _unit.Statistics.IotlbHits > hitsBefore,
            "a second descriptor per ADI (page 1 -> page 3) reuses cached translations: "
            + $"IOTLB hits {hitsBefore} -> {_unit.Statistics.IotlbHits}");
    }

    private void MttyDma(Guest c)
    {
        long lockedBefore = c.Proc.LockedVm;
        ulong from = RamIova + (4 * Page), to = RamIova + (5 * Page);
        long ret = c.MttyFile!.MdevFile!.Ioctl(
            MttyDriver.IoctlDmaLoopback, new MttyDmaLoopback(from, to, 64).ToBytes());
        byte[] expect = ReadProc(c, c.Ram + (4 * Page), 64);
        bool landed = ret == 64 && ReadProc(c, c.Ram + (5 * Page), 64).SequenceEqual(expect);
        int pins = c.Backend.Mappings.Sum(m => m.ExternalPinCount);
        long locked = c.Proc.LockedVm;
        bool charged = c.Backend.Domains.Count > 0;
        bool accounting = charged ? locked == lockedBefore : locked == lockedBefore + 2;
        _r.Expect(
            landed && pins == 2 && accounting,
            $"guest {c.Name}: mtty DMA loopback (iova 0x{from:x} -> 0x{to:x}, 64 bytes) through "
            + $"vfio_pin_pages: {pins} pages pinned, locked_vm {lockedBefore} -> {locked}"
            + (charged
                ? " (already charged by the IOMMU-backed MAP_DMA)"
                : " (charged by the pins)"));
        _r.Fact("mtty.external_pins", pins);
    }

    private void WrongDma()
    {
        _r.Note("Deliberately wrong DMA:");
        int before = _driver.Faults.Count;
        var wrong = new List<WrongDmaCase>();
        if (!_legacy)
        {
            Guest a = _guests[0], b = _guests[1], cc = _guests[2];
            ulong completion = RamIova + (2 * Page);
            byte[] bPage6 = ReadProc(b, b.Ram + (6 * Page), 16);
            Submit(b, AccelDescriptor.Memmove(SecretIova, RamIova + (6 * Page), 16, completion));
            (byte st, ulong addr) = Completion(b);
            bool mappedInA = Iommu.IovaToPhys(a.Domain!, SecretIova) == HostPa(a, SecretIova)
                && Iommu.IovaToPhys(b.Domain!, SecretIova) == 0;
            bool untouched = ReadProc(b, b.Ram + (6 * Page), 16).SequenceEqual(bPage6);
            _r.Expect(
                mappedInA && st == Adi.StatusPageFault && addr == SecretIova && untouched,
                $"guest B's ADI reads iova 0x{SecretIova:x} (mapped only in guest A's domain): "
                + $"blocked, completion = page fault at 0x{addr:x}, B's memory untouched");
            // First level: the walk meets a not-present entry (0x71) before any permission check.
            wrong.Add(new(
                "B reads A's IOVA", b.Pasid, SecretIova, false,
                _firstLevel ? VtdFaultReason.FirstLevelNotPresent : VtdFaultReason.ScalableRead));

            Submit(cc, AccelDescriptor.Memmove(RamIova, UnmappedIova, 16, completion));
            (st, addr) = Completion(cc);
            _r.Expect(
                st == Adi.StatusPageFault && addr == UnmappedIova,
                $"guest C's ADI writes unmapped iova 0x{UnmappedIova:x}: blocked, "
                + $"completion = page fault at 0x{addr:x}");
            VtdFaultReason write = _firstLevel
                ? VtdFaultReason.FirstLevelNotPresent : VtdFaultReason.ScalableWrite;
            wrong.Add(new("C writes unmapped IOVA", cc.Pasid, UnmappedIova, true, write));
        }
        else
        {
            // Without scalable mode the root table is legacy: a PASID-tagged request (what an ADI
            // would send) cannot be translated.
            _parent.EnablePasid();
            DmaResult r = _parent.DmaWrite(1, RamIova, "rogue ADI"u8);
            _r.Expect(
                r.Status == DmaStatus.Fault,
                $"{_parent.Name} sends a write with PASID 1 (as an ADI would): {r.Status}, "
                + $"reason 0x{r.FaultReason:x2}");
            wrong.Add(new(
                "request with PASID 1", 1, RamIova, true, VtdFaultReason.LegacyModePasidRequest));
            _parent.DisablePasid();
        }

        IReadOnlyList<DmarFaultRecord> faults = _driver.Faults;
        Table ft = _r.Table(
            "faults", "#", "what", "source", "PASID", "guest", "access", "address", "reason",
            "meaning");
        for (int i = before; i < faults.Count; i++)
        {
            DmarFaultRecord f = faults[i];
            string guest = _guests.FirstOrDefault(g => g.Pasid != 0 && g.Pasid == f.Pasid)?.Name
                ?? "-";
            ft.Row(
                i + 1,
                i - before < wrong.Count ? wrong[i - before].What : "?",
                PciAddress.FromRequesterId(_unit.Segment, f.SourceId),
                f.Pasid?.ToString(CultureInfo.InvariantCulture) ?? "-",
                guest,
                f.Write ? "write" : "read",
                $"0x{f.Address:x}",
                $"0x{(int)f.Reason:x2}",
                VtdDecoder.DescribeFaultReason(f.Reason));
        }

        bool match = faults.Count - before == wrong.Count;
        for (int i = 0; match && i < wrong.Count; i++)
        {
            DmarFaultRecord f = faults[before + i];
            match = f.SourceId == _parent.RequesterId && f.Pasid == wrong[i].Pasid
                && f.Address == wrong[i].Address && f.Write == wrong[i].Write
                && f.Reason == wrong[i].Reason;
        }

        _r.Expect(
            match,
            $"the fault handler read {faults.Count - before} record(s) from the unit's fault "
            + "registers, "
            + "each with the requester, PASID, address and reason expected: "
            + string.Join(", ", wrong.Select(w => $"0x{(int)w.Reason:x2}")));
        _expectedFaults += wrong.Count;
    }

    // ---------------------------------------------------------------------------------------------
    private void Step5TranslationStructures()
    {
        VtdImage image = _driver.ExportImage();
        Guest? g = _guests.FirstOrDefault(x => x.Domain is not null);
        uint? pasid = g?.Pasid;
        ulong iova = RamIova + Page;
        ushort rid = _parent.RequesterId;
        _r.Section($"Translation structures for {_parent.Name}" + (pasid is null
            ? " (requests without PASID)"
            : $" with PASID {pasid} (guest {g!.Name})"));
        string kinds = string.Join(", ", image.Chunks.GroupBy(c => c.Kind).OrderBy(k => k.Key)
            .Select(k => $"{k.Count()} {VtdImageJson.KindName(k.Key)}"));
        _r.Note("Exported from the unit's RTADDR by walking memory as the hardware does: "
            + $"{image.Mode} mode, {kinds} ({image.TotalBytes / 1024} KiB)");
        _r.Note($"Device {_parent.Name} @0x{image.RootTable:x}"
            + (pasid is null ? "" : $" (pasid {pasid})") + $", IOVA 0x{iova:x}:");

        // VtdDecoder names each entry the walk reads and decodes the fields that steer it; given
        // the unit's configuration it also judges what only some units fault on.
        IReadOnlyList<VtdEntryDescription> walk =
            VtdDecoder.DescribeWalk(image, _unit.Config, rid, pasid, iova);
        Table t = _r.Table("path", "structure", "index", "entry @", "value", "meaning");
        foreach (VtdEntryDescription e in walk)
        {
            t.Row(e.Structure, e.Index, $"0x{e.Address:x}", $"0x{e.Value:x16}", e.Meaning);
        }

        _r.Fact("path.length", walk.Count);
        if (_graphPath is not null)
        {
            WriteGraph(image);
        }

        IReadOnlyList<VtdImageEntry> path = image.Path(rid, pasid, iova);
        if (g is null)
        {
            bool legacyOk = image.Mode == VtdTranslationMode.Legacy && path.Count >= 2
                && path[0].Kind == VtdImageChunkKind.RootTable
                && path[1].Kind == VtdImageChunkKind.LegacyContextTable;
            _r.Expect(legacyOk, "legacy mode: root entry -> legacy context entry; "
                + "no PASID directory exists to hold an aux domain");
            return;
        }

        ulong expectedPa = HostPa(g, iova)!.Value;
        VtdImageEntry leaf = path[^1];
        int levels = path.Count(p => p.Kind == TableKind);
        _r.Expect(
            image.Mode == VtdTranslationMode.Scalable
                && path.Select(p => p.Kind).Distinct().Count() == 5
                && leaf.Kind == TableKind && leaf.Level == 1
                && (leaf.Value & LeafAddressMask) == expectedPa,
            $"root -> scalable context -> PASID directory -> PASID entry -> {levels} "
            + (_firstLevel ? "first-level (from FLPTR) " : "page-table ")
            + $"levels; the 4K leaf points at guest {g.Name}'s host page 0x{expectedPa:x}");

        PasidTable(image, path.First(p => p.Kind == VtdImageChunkKind.PasidTable));
        MappedPages(image, g);
    }

    // The PASID table of the device: one entry per aux domain (plus RID_PASID).
    private void PasidTable(VtdImage image, VtdImageEntry pe)
    {
        ulong tableBase = pe.Address & ~0xFFFUL;
        Table pt = _firstLevel
            ? _r.Table("pasid_table", "PASID", "PGTT", "DID", "FLPTR", "FLPM", "flags", "domain")
            : _r.Table("pasid_table", "PASID", "PGTT", "DID", "SLPTPTR", "AW", "domain");
        bool flEntries = true;
        var present = new List<uint>();
        for (uint p = 0; p < 64; p++)
        {
            ulong q0 = image.ReadUInt64(tableBase + (p * VtdFormat.PasidEntrySize));
            if ((q0 & VtdFormat.Present) == 0)
            {
                continue;
            }

            ulong q1 = image.ReadUInt64(tableBase + (p * VtdFormat.PasidEntrySize) + 8);
            int pgtt = (int)((q0 >> VtdFormat.PasidPgttShift) & 7);
            Guest? owner = _guests.FirstOrDefault(x => x.Pasid == p);
            string dom = owner is not null ? $"guest {owner.Name}'s {DomainWord} domain"
                : p == 0 ? "RID_PASID: the parent's default domain" : "?";
            if (_firstLevel)
            {
                // FLPTR, FLPM and the privilege controls live in the entry's third word.
                ulong q2 = image.ReadUInt64(tableBase + (p * VtdFormat.PasidEntrySize) + 16);
                const ulong sreWpe = VtdFormat.PasidSre | VtdFormat.PasidWpe;
                string flags = string.Join(' ', new[]
                {
                    (VtdFormat.PasidSre, "SRE"), (VtdFormat.PasidWpe, "WPE"),
                    (VtdFormat.PasidNxe, "NXE"), (VtdFormat.PasidEafe, "EAFE"),
                }.Where(f => (q2 & f.Item1) != 0).Select(f => f.Item2));
                pt.Row(
                    p,
                    VtdDecoder.PgttName(pgtt),
                    q1 & VtdFormat.PasidDidMask,
                    $"0x{q2 & VtdFormat.PointerMask:x}",
                    ((q2 >> VtdFormat.PasidFlpmShift) & 3) == 0 ? "4-level" : "5-level",
                    flags.Length == 0 ? "-" : flags,
                    dom);
                flEntries &= pgtt == VtdFormat.PgttFirstLevel
                    && (q2 & sreWpe) == (owner is not null ? sreWpe : 0);
                present.Add(p);
                continue;
            }

            pt.Row(
                p,
                VtdDecoder.PgttName(pgtt),
                q1 & VtdFormat.PasidDidMask,
                pgtt == VtdFormat.PgttPassThrough ? "-" : $"0x{q0 & VtdFormat.PointerMask:x}",
                $"{((q0 >> VtdFormat.PasidAwShift) & 7) + 2}-level",
                dom);
            present.Add(p);
        }

        _r.Expect(
            _guests.All(x => present.Contains(x.Pasid)) && present.Contains(0),
            $"the PASID table holds RID_PASID (0) and the three {DomainWord} PASIDs "
            + $"({string.Join(", ", _guests.Select(x => x.Pasid))}), "
            + "each with its own page tables");
        if (_firstLevel)
        {
            _r.Expect(
                flEntries,
                "every entry is PGTT=first-level; the guests' PASIDs have SRE and WPE (set for "
                + "UNMANAGED domains), RID_PASID neither (no SRE for the default domain)");
        }
    }

    // debugfs domain_translation_struct style: one row per mapped 4K page of guest A's domain.
    private void MappedPages(VtdImage image, Guest g)
    {
        _r.Note($"Mapped pages of guest {g.Name}'s domain "
            + "(as debugfs domain_translation_struct prints them):");
        Table leaves = _r.Table(
            "domain_translation_struct", "IOVA_PFN", "PML4E", "PDPE", "PDE", "PTE");
        bool all = true;
        ulong rw = _firstLevel ? VtdFormat.FlPresent | VtdFormat.FlReadWrite | VtdFormat.FlUser
            : VtdFormat.SlRead | VtdFormat.SlWrite;
        VtdImageEntry? firstPte = null;
        IEnumerable<ulong> iovas = Enumerable.Range(0, RamPages)
            .Select(p => RamIova + ((ulong)p * Page)).Append(SecretIova);
        foreach (ulong va in iovas)
        {
            IReadOnlyList<VtdImageEntry> p = image.Path(_parent.RequesterId, g.Pasid, va);
            ulong[] levels = [.. Enumerable.Range(1, 4).Reverse().Select(l => p.FirstOrDefault(
                e => e.Kind == TableKind && e.Level == l).Value)];
            firstPte ??= p.FirstOrDefault(e => e.Kind == TableKind && e.Level == 1);
            leaves.Row(
                $"0x{va >> 12:x13}",
                $"0x{levels[0]:x16}",
                $"0x{levels[1]:x16}",
                $"0x{levels[2]:x16}",
                $"0x{levels[3]:x16}");
            all &= HostPa(g, va) is ulong hpa && (levels[3] & LeafAddressMask) == hpa
                && (levels[3] & rw) == rw;
        }

        _r.Expect(all, $"every PTE of guest {g.Name}'s domain is "
            + (_firstLevel ? "P, R/W and U/S" : "R/W")
            + " and points at the host page the process's vaddr is backed by");
        if (_firstLevel && firstPte is VtdImageEntry pte)
        {
            // The IA-32e bits of one leaf as VtdDecoder names them (A/D: set by the unit's walks).
            string meaning = VtdDecoder.DescribeEntry(image, pte, _parent.RequesterId, g.Pasid)
                .Meaning;
            string bits = meaning[..meaning.IndexOf(" leaf", StringComparison.Ordinal)];
            Table b = _r.Table("first_level_pte", "IOVA_PFN", "PTE", "bits");
            b.Row($"0x{RamIova >> 12:x13}", $"0x{pte.Value:x16}", bits);
            _r.Expect(
                bits.StartsWith("P RW US", StringComparison.Ordinal)
                    && bits.Contains(" A", StringComparison.Ordinal),
                $"the first-level PTE of IOVA 0x{RamIova:x} reads {bits}: present, writable, "
                + "user, accessed by the ADI's DMA");
        }
    }

    // The parent's structures with every PASID as Graphviz DOT (VtdImageDot), for dot -Tsvg.
    private void WriteGraph(VtdImage image)
    {
        string dot = image.ToDot(_parent.RequesterId);
        File.WriteAllText(_graphPath!, dot);
        _r.Note($"Graph of {_parent.Name}'s structures written to {_graphPath} "
            + $"({dot.Length / 1024} KiB of DOT; render: dot -Tsvg {_graphPath} -o tour.svg)");
        bool everyPasid = _guests.All(x => x.Pasid == 0
            || dot.Contains($"PASID {x.Pasid}:", StringComparison.Ordinal));
        _r.Expect(
            everyPasid && dot.Contains('→', StringComparison.Ordinal),
            "the graph holds the device's root and context entries, "
            + (_legacy ? "its page tables" : "every aux PASID's entry and page tables")
            + " and its mapped ranges");
        _r.Fact("graph.bytes", dot.Length);
    }

    // ---------------------------------------------------------------------------------------------
    private void Step6Summary()
    {
        _r.Section("Summary");
        Table t = _r.Table(
            "guests", "guest", "groups", "IOMMU domains", "external domain", "mappings", "mapped",
            "locked_vm", "vendor pins");
        foreach (Guest g in _guests)
        {
            VfioIommuType1 b = g.Backend;
            b.Audit();
            t.Row(
                g.Name,
                g.Container.Groups.Count,
                b.Domains.Count,
                b.HasExternalDomain ? "yes" : "no",
                b.Mappings.Count,
                $"{b.Mappings.Sum(m => (long)m.Size) / 1024} KiB",
                g.Proc.LockedVm,
                b.Mappings.Sum(m => m.ExternalPinCount));
        }

        VtdCacheStatistics s = _unit.Statistics;
        VtdActivity act = _unit.Activity;
        string faultsSeen = string.Join(", ", act.FaultsByReason.OrderBy(k => k.Key)
            .Select(k => $"0x{(int)k.Key:x2} x{k.Value}"));
        Table c = _r.Table("unit", "counter", "value");
        c.Row("host pages pinned (page pool)", _pages.TotalPins);
        c.Row("IOTLB hits / misses", $"{s.IotlbHits} / {s.IotlbMisses}");
        c.Row("context-cache hits / misses", $"{s.ContextHits} / {s.ContextMisses}");
        c.Row("PASID-cache hits / misses", $"{s.PasidHits} / {s.PasidMisses}");
        c.Row(
            "invalidations (context / PASID / IOTLB)",
            $"{act.ContextInvalidations} / {act.PasidInvalidations} / {act.IotlbInvalidations}");
        c.Row("faults seen by the unit", faultsSeen.Length > 0 ? faultsSeen : "none");
        c.Row("faults read by the driver (IntelIommu.Faults)", _driver.Faults.Count);
        c.Row("PASIDs in use", _driver.PasidsInUse);

        long expectedPins = _guests.Sum(g =>
            g.Backend.Mappings.Sum(m => g.Backend.Domains.Count > 0 ? (long)(m.Size / Page) : 0)
            + g.Backend.Mappings.Sum(m => (long)m.ExternalPinCount));
        _r.Expect(
            _pages.TotalPins == expectedPins,
            $"pins: {_pages.TotalPins} = every page of the IOMMU-backed mappings "
            + "+ the vendor's pins");
        _r.Expect(
            _legacy ? s.IotlbMisses == 0 : s.IotlbHits > 0 && s.IotlbMisses > 0,
            _legacy
                ? "no translation succeeded through the unit (nothing uses an IOMMU domain)"
                : $"the IOTLB served {s.IotlbHits} lookups and walked the tables "
                    + $"{s.IotlbMisses} times");
        _r.Expect(
            _driver.Faults.Count == _expectedFaults && act.Faults == _expectedFaults,
            $"faults: {_expectedFaults} expected, {act.Faults} seen by the unit, "
            + $"{_driver.Faults.Count} read by the driver — nothing else faulted");
        _r.Expect(
            _driver.PasidsInUse == (_pasidAttach ? 0 : _guests.Count(g => g.Pasid != 0)),
            $"aux PASIDs in use = aux domains attached ({_driver.PasidsInUse})");

        _r.Fact("mappings", _guests.Sum(g => g.Backend.Mappings.Count));
        _r.Fact("pages.pinned", _pages.TotalPins);
        MetricsSummary(s, act);
        Exit();

        _r.Fact("iotlb.hits", s.IotlbHits);
        _r.Fact("iotlb.misses", s.IotlbMisses);
        _r.Fact("faults", _driver.Faults.Select(f =>
            $"pasid={f.Pasid?.ToString(CultureInfo.InvariantCulture) ?? "-"} "
            + $"addr=0x{f.Address:x} reason=0x{(int)f.Reason:x2}").ToList());
    }

    // The guests exit (every fd closed, as when QEMU quits): ADIs disabled, aux domains detached,
    // pins dropped.
    private void Exit()
    {
        foreach (Guest g in _guests)
        {
            g.Proc.Exit();
        }

        if (_pasidAttach)
        {
            // Close detached each PASID; the owner drops the domains it handed out, and removing
            // the mdevs frees the global PASIDs.
            bool detached = _guests.All(g => g.Pasid == 0 || Iommu.GetDomainForDevPasid(
                _parent, g.Pasid, DomainType.Blocked, out IDomain? d) != Errno.None || d is null);
            foreach (MdevDevice m in _adis)
            {
                IDomain? d = m.GetIommuDomain();
                m.SetIommuDomain(null);
                if (d is not null)
                {
                    Iommu.DomainFree(d);
                }
            }

            bool freed = _adis.All(m => _mdev.Remove(m) == Errno.None)
                && _accel.Adis.All(a => a.AllocatedPasid is null);
            _r.Expect(
                detached && freed,
                "PASID attach: close detached every ADI's PASID (iommu_detach_device_pasid), "
                + "remove freed them (iommu_free_global_pasid)");
        }

        bool adisOff = _accel.Adis.All(a => !a.Enabled);
        _r.Expect(
            adisOff && _driver.PasidsInUse == 0 && _pages.TotalPins == 0
                && _guests.All(g => g.Proc.LockedVm == 0)
                && _adis.All(m => m.GetIommuDomain() is null),
            $"the guests exit: ADIs disabled, {DomainWord} domains detached and their PASIDs freed "
            + $"({_driver.PasidsInUse} in use), every pin dropped ({_pages.TotalPins} pinned), "
            + "locked_vm back to 0");

        IReadOnlyList<MetricValue> after =
            MetricsSnapshot.Read(_platform, IommuCore.MeterName, VfioCore.MeterName);
        _r.Expect(
            after.Sum("vfio.type1.pinned.pages") == 0
                && !after.Any(v => v.Instrument == "vfio.type1.dma.available"),
            "after the exit the metrics agree: no container reports pinned pages or dma_avail "
            + $"any more; iommu.mapped.pages = {after.Sum("iommu.mapped.pages")}");
    }

    // The platform's metrics (System.Diagnostics.Metrics, docs/metrics.md) as an exporter would
    // collect them now, checked against the models' own counters.
    private void MetricsSummary(VtdCacheStatistics s, VtdActivity act)
    {
        IReadOnlyList<MetricValue> m = MetricsSnapshot.Read(
            _platform, IommuCore.MeterName, VtdMetrics.MeterName, VfioCore.MeterName);
        _r.Note("Metrics (System.Diagnostics.Metrics, one collection as an exporter would make it; "
            + "docs/metrics.md lists them):");
        Table t = _r.Table("metrics", "instrument", "tags", "value", "unit");
        foreach (MetricValue v in m.Where(v =>
            v.Value != 0 || v.Instrument.StartsWith("vfio.", StringComparison.Ordinal)))
        {
            t.Row(v.Instrument, v.TagText, v.Value, v.Unit);
        }

        long pinned = m.Sum("vfio.type1.pinned.pages");
        _r.Expect(
            m.Sum("iommu.vtd.iotlb.hits", "unit", "dmar0") == s.IotlbHits
                && m.Sum("iommu.vtd.iotlb.misses", "unit", "dmar0") == s.IotlbMisses
                && m.Sum("iommu.vtd.faults") == act.Faults,
            $"the iommu.vtd.* instruments agree with the unit: {s.IotlbHits} IOTLB hits, "
            + $"{s.IotlbMisses} misses, {act.Faults} faults");
        _r.Expect(
            pinned == _pages.TotalPins,
            $"vfio.type1.pinned.pages over the containers ({pinned}) = "
            + "the pins the page pool holds");
        string avail = string.Join(", ", _guests.Select(g => $"{g.Name}: {g.Backend.DmaAvail}"));
        _r.Expect(
            _guests.All(g => g.Backend.DmaAvail
                == m.Sum("vfio.type1.dma.available", "container", g.Container.Id)),
            $"vfio.type1.dma.available per container = dma_avail ({avail})");
        long inDomains = _guests.Sum(g => g.OwnMapped
            + (g.Backend.Domains.Count * g.Backend.Mappings.Sum(x => (long)(x.Size / Page))));
        _r.Expect(
            m.Sum("iommu.mapped.pages") == inDomains
                && (m.Sum("iommu.map.operations") > 0) == (inDomains > 0),
            $"iommu.mapped.pages ({m.Sum("iommu.mapped.pages")}) = the pages of every MAP_DMA in "
            + "every IOMMU domain of its container; "
            + $"iommu_map ran {m.Sum("iommu.map.operations")} times");

        string[] totals =
        [
            "iommu.map.operations", "iommu.unmap.operations", "iommu.mapped.pages",
            "iommu.vtd.iotlb.hits", "iommu.vtd.iotlb.misses", "iommu.vtd.invalidations",
            "iommu.vtd.faults",
        ];
        foreach (string name in totals)
        {
            _r.Fact($"metrics.{name}", m.Sum(name));
        }

        _r.Fact("metrics.vfio.type1.pinned.pages", pinned);
        _r.Fact("metrics.vfio.type1.dma.available", _guests
            .Select(g => m.Sum("vfio.type1.dma.available", "container", g.Container.Id)).ToList());
    }

    // ---------------------------------------------------------------------------------------------
    private VtdImageChunkKind TableKind =>
        _firstLevel ? VtdImageChunkKind.FirstLevelTable : VtdImageChunkKind.PageTable;

    private ulong LeafAddressMask =>
        _firstLevel ? VtdFormat.FlAddressMask : VtdFormat.SlAddressMask;

    private string DomainWord => _pasidAttach ? "PASID-attached" : "aux";

    private static int Levels(int agaw) => agaw + 2;

    private static string Short(Guid uuid) => uuid.ToString()[..8] + "…" + uuid.ToString()[^4..];

    private static byte[] Payload(Guest g)
    {
        byte[] b = new byte[32];
        byte[] text = Encoding.ASCII.GetBytes($"guest {g.Name}: hello via PASID {g.Pasid}");
        text.AsSpan(0, Math.Min(text.Length, b.Length)).CopyTo(b);
        return b;
    }

    private static ulong? HostPa(Guest g, ulong iova)
    {
        ulong va = iova == SecretIova ? g.Secret : g.Ram + (iova - RamIova);
        return va != 0 && g.Proc.TryTranslate(va, out ulong pfn) ? pfn << 12 : null;
    }

    private static byte[] ReadProc(Guest g, ulong va, int n)
    {
        byte[] b = new byte[n];
        g.Proc.Read(va, b).ThrowIfError();
        return b;
    }

    private static void Submit(Guest g, AccelDescriptor d)
    {
        long n = g.AdiFile!.MdevFile!.Write(d.ToBytes(), SiovAccelDriver.PortalOffset);
        if (n != AccelDescriptor.Length)
        {
            throw new InvalidOperationException($"portal write returned {n}");
        }
    }

    private static (byte Status, ulong FaultAddress) Completion(Guest g)
    {
        byte[] rec = ReadProc(g, g.Ram + (2 * Page), 16);
        return (rec[0], BitConverter.ToUInt64(rec, 8));
    }

    private sealed record WrongDmaCase(
        string What, uint? Pasid, ulong Address, bool Write, VtdFaultReason Reason);

    private sealed class Guest(string name, ProcessAddressSpace proc)
    {
        public string Name { get; } = name;

        public ProcessAddressSpace Proc { get; } = proc;

        public VfioContainer Container { get; set; } = null!;

        public VfioIommuType1 Backend => Container.Backend!;

        public MdevDevice? Adi { get; set; }

        public VfioDeviceFile? AdiFile { get; set; }

        public IDomain? Domain { get; set; }

        public uint Pasid { get; set; }

        public MdevDevice? Mtty { get; set; }

        public VfioDeviceFile? MttyFile { get; set; }

        public ulong Ram { get; set; }

        public ulong Secret { get; set; }

        // Pages the tour mapped into the mdev's domain itself (PASID attach: no type1 domain).
        public int OwnMapped { get; set; }
    }
}

/// <summary>How the tour runs: legacy mode, first-level tables, the 6.2 PASID attach way.</summary>
internal sealed record TourOptions(bool Legacy, bool FirstLevel = false, bool PasidAttach = false);
