// snippet-begin: sva-platform
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Uacce; // section 10 (the Uacce package)
// snippet-end: sva-platform
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Iommu.VtD.Diagnostics;

namespace Snippets;

/// <summary>docs/sva-and-pasid.md: a process's address space shared with a device (SVA), a paging domain on a PASID (6.2), a uacce queue.</summary>
internal static class SvaGuideDoc
{
    /// <summary>What the guide says each step gives.</summary>
    public sealed class Outcome
    {
        public Errno IopfWithoutPri, SvaTwice;
        public bool SvaReportedEnabled;
        public bool AtsEnabled, PriEnabled, PasidEnabled;
        public uint Pasid, HandlePasid, PasidAfterUnbind;
        public ulong Pgd;
        public DmaResult Hit, HitAgain, FirstTouch, AfterResponse, Outside, OutsideAgain, AfterMunmap, PlainAfterMunmap, AfterUnbind;
        public ulong CpuPa;
        public string SeenByCpu = "";
        public int AtcBeforeMunmap, AtcAfterMunmap;
        public long PageRequestsReported, IotlbInvalidations;
        public uint GlobalPasid;
        public Errno PasidAttachAgain, PasidZero;
        public DmaResult PasidDma, PasidDmaAfterDetach;
        public uint QueuePasid;
        public DmaResult QueueDma;
        public bool QueueReleased;
        public string SvaEntry = "", PasidAttachEntry = "";
        public bool FlptrIsPgd, SameHandleTwice, StillBoundAfterOneUnbind, DefaultDomainKept;
        public uint PasidWhileAttached;
        public Errno SvaOnSecondLevelUnit;
    }

    public static Outcome Run()
    {
        var o = new Outcome();

        // snippet-begin: sva-platform

        using var platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB });
        PciBus pci = platform.AddPciBus();
        VtdConfig config = VtdConfig.ScalableModeFirstLevel48Bit with
        {
            DeviceTlb = true,          // ECAP.DT: ATS translation requests, device-TLB invalidations
            PageRequests = true,       // ECAP.PRS: the page request queue, page group responses
            PageRequestDrain = true,   // ECAP.PDS: the drain 5.15's unbind asks for
        };
        var unit = new VtdUnit(platform.Memory, config);
        pci.AddDmaRemapper(unit, includeAll: true);
        var intel = new IntelIommu(platform, unit);
        pci.SetIommuOps(intel).ThrowIfError();                                // bus_set_iommu()
        // snippet-end: sva-platform

        // snippet-begin: sva-device
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:05.0")
        {
            PasidWidth = 20,   // PASID capability: 2^20 PASIDs
            Ats = true,        // ATS: the device caches translations in its ATC
            Pri = true,        // PRI: the device asks for pages it cannot translate
            Acs = true,        // its own IOMMU group (SVA needs a singleton group)
        });
        Console.WriteLine($"{dev.Name}: PASID {dev.PasidEnabled}, ATS {dev.AtsEnabled}, PRI {dev.PriEnabled}");
        // snippet-end: sva-device
        o.PasidEnabled = dev.PasidEnabled;
        o.AtsEnabled = dev.AtsEnabled;
        o.PriEnabled = dev.PriEnabled;

        // snippet-begin: sva-process
        HostPageAllocator pages = HostPageAllocator.ForPlatform(platform);  // 1 GiB at 4 GiB: the pages processes get
        using var app = new ProcessAddressSpace(pages, "app");
        ulong buf = app.Mmap(4 * Sizes.Page);                                 // anonymous, read-write, nothing present yet
        app.Write(buf, "written by the CPU"u8).ThrowIfError();               // the CPU touches page 0 only
        app.TryTranslate(buf, out ulong pfn);
        Console.WriteLine($"buf 0x{buf:x}: page 0 at 0x{pfn << 12:x}, CR3 0x{app.Pgd:x}");
        // snippet-end: sva-process
        o.CpuPa = pfn << 12;
        o.Pgd = app.Pgd;

        // snippet-begin: sva-enable
        IommuCore iommu = platform.Iommu;
        iommu.DevEnableFeature(dev, IommuDevFeature.Iopf).ThrowIfError();   // iommu_dev_enable_feature(IOPF)
        iommu.DevEnableFeature(dev, IommuDevFeature.Sva).ThrowIfError();    // ... (SVA): iopf queue + fault handler
        // snippet-end: sva-enable
        o.SvaTwice = iommu.DevEnableFeature(dev, IommuDevFeature.Sva);
        o.SvaReportedEnabled = iommu.DevFeatureEnabled(dev, IommuDevFeature.Sva);
        PciDevice noPri = pci.AddDevice(new PciDeviceSpec("0000:00:07.0") { PasidWidth = 20, Ats = true, Acs = true });
        o.IopfWithoutPri = iommu.DevEnableFeature(noPri, IommuDevFeature.Iopf);

        using var faults = new MetricCollector<long>(platform.GetMeter(IommuCore.MeterName), "iommu.faults");
        using var invalidations = new MetricCollector<long>(platform.GetMeter(VtdMetrics.MeterName), "iommu.vtd.invalidations");

        // snippet-begin: sva-bind
        iommu.SvaBindDevice(dev, app, drvdata: null, out IommuSva? sva).ThrowIfError();  // iommu_sva_bind_device()
        uint pasid = iommu.SvaGetPasid(sva!);                                           // iommu_sva_get_pasid()
        // snippet-end: sva-bind
        o.Pasid = pasid;
        o.HandlePasid = iommu.SvaGetPasid(sva!);
        (o.SvaEntry, ulong flptr) = PasidEntry(intel, dev, pasid, buf);
        o.FlptrIsPgd = flptr == app.Pgd;

        // snippet-begin: sva-dma
        var bytes = new byte[18];
        DmaResult hit = dev.AtsDmaRead(pasid, buf, bytes);                // translation request, ATC filled, then the read
        DmaResult again = dev.AtsDmaRead(pasid, buf, bytes);              // from the ATC: no translation request
        Console.WriteLine($"{hit.Status} at 0x{hit.Address:x}: \"{System.Text.Encoding.ASCII.GetString(bytes)}\"");
        // snippet-end: sva-dma
        o.Hit = hit;
        o.HitAgain = again;
        o.SeenByCpu = System.Text.Encoding.ASCII.GetString(bytes);

        // snippet-begin: sva-page-request
        ulong page2 = buf + (2 * Sizes.Page);                              // inside the mapping, never touched
        DmaResult first = dev.AtsDmaWrite(pasid, page2, "from the device"u8);
        // first.Status == PageRequestPending: the device sent a page request and waits for the answer
        dev.WaitForPageGroupResponses(TimeSpan.FromSeconds(10));          // the iopf worker faulted the page in: Success
        DmaResult retry = dev.AtsDmaWrite(pasid, page2, "from the device"u8);
        var back = new byte[15];
        app.Read(page2, back).ThrowIfError();                              // the CPU sees what the device wrote
        // snippet-end: sva-page-request
        o.FirstTouch = first;
        o.AfterResponse = retry;
        o.SeenByCpu += "|" + System.Text.Encoding.ASCII.GetString(back);

        // snippet-begin: sva-invalid
        ulong outside = buf + (64 * Sizes.Page);                           // no VMA there
        DmaResult refused = dev.AtsDmaWrite(pasid, outside, "x"u8);      // PageRequestPending
        dev.WaitForPageGroupResponses(TimeSpan.FromSeconds(10));          // answered Invalid Request
        DmaResult failed = dev.AtsDmaWrite(pasid, outside, "x"u8);       // PageRequestFailed
        // snippet-end: sva-invalid
        o.Outside = refused;
        o.OutsideAgain = failed;

        faults.RecordObservableInstruments();
        o.PageRequestsReported = faults.GetMeasurementSnapshot().Where(m => m.Tags.TryGetValue("type", out object? t) && (string?)t == "page_request").Sum(m => m.Value);
        invalidations.RecordObservableInstruments();
        long iotlbBefore = IotlbInvalidations(invalidations);

        // snippet-begin: sva-munmap
        int atcBefore = dev.AtcCount;                                      // page 0 and page 2
        app.Munmap(page2, Sizes.Page);                                     // the mmu notifier: P_IOTLB + device-TLB flush
        int atcAfter = dev.AtcCount;
        // snippet-end: sva-munmap
        invalidations.RecordObservableInstruments();
        o.IotlbInvalidations = IotlbInvalidations(invalidations) - iotlbBefore;
        // snippet-begin: sva-munmap
        DmaResult gone = dev.AtsDmaWrite(pasid, page2, "x"u8);            // no VMA any more: a page request ...
        dev.WaitForPageGroupResponses(TimeSpan.FromSeconds(10));
        gone = dev.AtsDmaWrite(pasid, page2, "x"u8);                      // ... answered Invalid Request
        // snippet-end: sva-munmap
        o.AtcBeforeMunmap = atcBefore;
        o.AtcAfterMunmap = atcAfter;
        o.AfterMunmap = gone;
        o.PlainAfterMunmap = dev.DmaWrite(pasid, page2, "x"u8);

        iommu.SvaBindDevice(dev, app, null, out IommuSva? twice).ThrowIfError();
        o.SameHandleTwice = ReferenceEquals(twice, sva);
        iommu.SvaUnbindDevice(twice!);
        o.StillBoundAfterOneUnbind = iommu.SvaGetPasid(sva!) == pasid;

        // snippet-begin: sva-unbind
        iommu.SvaUnbindDevice(sva!);                                       // iommu_sva_unbind_device(): entry torn down, PRQ drained
        DmaResult late = dev.DmaRead(pasid, buf, bytes);                  // the PASID reaches nothing now
        iommu.DevDisableFeature(dev, IommuDevFeature.Sva).ThrowIfError();
        iommu.DevDisableFeature(dev, IommuDevFeature.Iopf).ThrowIfError();
        // snippet-end: sva-unbind
        o.AfterUnbind = late;
        o.PasidAfterUnbind = iommu.SvaGetPasid(sva!);

        IDomain? rid = iommu.GetDomainForDev(dev);

        // snippet-begin: pasid-attach
        IDomain domain = iommu.DomainAlloc(pci) ?? throw new InvalidOperationException("no domain");  // an UNMANAGED paging domain
        uint kpasid = iommu.AllocGlobalPasid(dev);                                                // iommu_alloc_global_pasid() (≈6.4)
        iommu.AttachDevicePasid(domain, dev, kpasid).ThrowIfError();                              // iommu_attach_device_pasid() (6.2)
        iommu.Map(domain, iova: 0x10_0000, paddr: 0x1_8000_0000, size: Sizes.Page, IommuProt.Read | IommuProt.Write).ThrowIfError();
        DmaResult w = dev.DmaWrite(kpasid, iova: 0x10_0010, "kernel PASID"u8);                  // lands at 0x1_8000_0010
        Errno busy = iommu.AttachDevicePasid(domain, dev, kpasid);                                // -EBUSY: the slot is taken
        // snippet-end: pasid-attach
        o.DefaultDomainKept = rid is not null && ReferenceEquals(iommu.GetDomainForDev(dev), rid) && rid != domain;
        o.PasidAttachEntry = PasidEntry(intel, dev, kpasid, 0x10_0000).Meaning;
        o.PasidWhileAttached = iommu.AllocGlobalPasid(dev);
        iommu.FreeGlobalPasid(o.PasidWhileAttached);
        // snippet-begin: pasid-attach
        iommu.DetachDevicePasid(domain, dev, kpasid);                                             // iommu_detach_device_pasid() (6.2)
        iommu.FreeGlobalPasid(kpasid);
        // snippet-end: pasid-attach
        o.GlobalPasid = kpasid;
        o.PasidDma = w;
        o.PasidAttachAgain = busy;
        o.PasidDmaAfterDetach = dev.DmaWrite(kpasid, 0x10_0010, "x"u8);
        o.PasidZero = iommu.AttachDevicePasid(domain, dev, 0);
        iommu.DomainFree(domain);

        // snippet-begin: uacce
        PciDevice accel = pci.AddDevice(new PciDeviceSpec("0000:00:06.0") { PasidWidth = 20, Ats = true, Pri = true, Acs = true });
        var uacce = new UacceCore(platform);
        uacce.Alloc(accel, new UacceInterface("copy", UacceDeviceFlags.Sva, new GuideAccelOps()), out UacceDevice? udev).ThrowIfError();
        uacce.Register(udev).ThrowIfError();                                    // /dev/copy-0
        uacce.Open(udev!.Name, app, out int fd).ThrowIfError();               // open(): binds app's mm, get_queue(pasid)
        var queue = (UacceQueue)app.GetFile(fd)!;
        queue.Ioctl(UacceCommands.StartQ, default).ThrowIfError();            // UACCE_CMD_START_Q
        DmaResult qdma = accel.DmaRead(queue.Pasid, buf, new byte[18]);       // the accelerator reads app's page 0
        app.Close(fd).ThrowIfError();                                          // release: PUT_Q, unbind
        // snippet-end: uacce
        o.QueuePasid = queue.Pasid;
        o.QueueDma = qdma;
        o.QueueReleased = queue.Released;

        // Section 1: a scalable-mode unit without first-level translation cannot do SVA.
        using (var other = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB }))
        {
            PciBus bus = other.AddPciBus();
            var slUnit = new VtdUnit(other.Memory, VtdConfig.ScalableMode48Bit with { DeviceTlb = true, PageRequests = true, PageRequestDrain = true });
            bus.AddDmaRemapper(slUnit, includeAll: true);
            bus.SetIommuOps(new IntelIommu(other, slUnit)).ThrowIfError();
            PciDevice d = bus.AddDevice(new PciDeviceSpec("0000:00:05.0") { PasidWidth = 20, Ats = true, Pri = true, Acs = true });
            other.Iommu.DevEnableFeature(d, IommuDevFeature.Iopf).ThrowIfError();
            o.SvaOnSecondLevelUnit = other.Iommu.DevEnableFeature(d, IommuDevFeature.Sva);
        }

        return o;
    }

    // The device's PASID entry as the driver wrote it: its decoded meaning and its first-level table pointer.
    private static (string Meaning, ulong Flptr) PasidEntry(IntelIommu intel, PciDevice dev, uint pasid, ulong va)
    {
        VtdImage image = intel.ExportImage();
        VtdImageEntry pe = image.Path(dev.RequesterId, pasid, va).First(e => e.Kind == VtdImageChunkKind.PasidTable);
        return (VtdDecoder.DescribeEntry(image, pe, dev.RequesterId, pasid).Meaning, image.ReadUInt64(pe.Address + 16) & VtdFormat.PointerMask);
    }

    // The last observation of iommu.vtd.invalidations{cache=iotlb} (IOTLB and PASID-based IOTLB descriptors).
    private static long IotlbInvalidations(MetricCollector<long> c) =>
        c.GetMeasurementSnapshot().Where(m => m.Tags.TryGetValue("cache", out object? t) && (string?)t == "iotlb").Select(m => m.Value).LastOrDefault();
}

// snippet-begin: uacce

// The accelerator's driver: programs its hardware queue with the PASID uacce hands it.
sealed class GuideAccelOps : IUacceOps
{
    public Errno GetQueue(UacceDevice uacce, uint pasid, UacceQueue queue) => Errno.None;

    public void PutQueue(UacceQueue queue) { }

    public Errno StartQueue(UacceQueue queue) => Errno.None;

    public void StopQueue(UacceQueue queue) { }

    public bool IsQUpdated(UacceQueue queue) => false;
}
// snippet-end: uacce
