// Runs every PACKAGE.md snippet and checks what it did; exits 1 when one did not behave as its text says.
using Iommu;
using Iommu.Devices;
using Iommu.VtD.Hardware;
using Snippets;

int failures = 0;
void Check(bool ok, string what)
{
    Console.WriteLine($"{(ok ? "ok  " : "FAIL")} {what}");
    failures += ok ? 0 : 1;
}

DmaResult core = CorePackage.Run();
Check(core.Status == DmaStatus.Ok && core.Address == 0x2_0000_0040, $"Iommu.Core: aux-domain DMA at 0x{core.Address:x}");

(DmaResult ok, DmaResult fault) = VtdPackage.Run();
Check(ok.Status == DmaStatus.Ok && ok.Address == 0x8000_0010, $"Iommu.VtD: DMA at 0x{ok.Address:x}");
Check(fault.Status == DmaStatus.Fault, $"Iommu.VtD: unmapped DMA {fault.Status}");

(Vfio.Mdev.MdevDevice mdev, Device? iommuDevice) = MdevPackage.Run();
Check(iommuDevice?.Name == "0000:00:04.0" && mdev.IommuGroup is not null, $"Vfio.Mdev: {mdev.Name} has IOMMU device {iommuDevice?.Name}");

(DmaResult dma, byte[] seen) = Type1Package.Run();
Check(dma.Status == DmaStatus.Ok && System.Text.Encoding.ASCII.GetString(seen) == "to guest RAM", $"Vfio.Type1: DMA {dma.Status}, guest memory holds \"{System.Text.Encoding.ASCII.GetString(seen)}\"");

(Uacce.UacceDeviceFlags flags, DmaResult sva, ulong cpuPa) = UaccePackage.Run();
Check(flags == Uacce.UacceDeviceFlags.Sva && sva.Status == DmaStatus.Ok && sva.Address == cpuPa, $"Uacce: SVA {flags}, DMA {sva.Status} at 0x{sva.Address:x} (CPU page 0x{cpuPa:x})");

// docs/embedding-vtd.md
EmbeddingDoc.Outcome e = EmbeddingDoc.Run();
Check(e.Write.Status == DmaStatus.Ok && e.Write.PhysicalAddress == 0x4000_0040 && e.Read.Status == DmaStatus.Ok && e.ReadAfterRestore == "hello",
    $"embedding: DMA by requester id at 0x{e.Write.PhysicalAddress:x}, restored unit reads \"{e.ReadAfterRestore}\"");
Check(e.Gather.Status == DmaStatus.Ok && e.Gather.Transferred == 5 && e.GatheredBytes == "lohel", $"embedding: gather in segment order \"{e.GatheredBytes}\"");
Check(e.IntoHole.Status == DmaStatus.MemoryError && e.IntoHole.Transferred == 0x10 && e.IntoHole.StopAddress == 0x10FF0 + e.IntoHole.Transferred && e.IntoHole.PhysicalAddress is null,
    $"embedding: DMA into the hole {e.IntoHole.Status}, stop at 0x{e.IntoHole.StopAddress:x} = iova + Transferred");
Check(e.Unmapped.Status == DmaStatus.Fault && e.Unmapped.StopAddress == 0x20000 && (ulong)e.Unmapped.FaultReason.Code == e.FaultRecordReason,
    $"embedding: unmapped DMA {e.Unmapped.FaultReason}, recorded with reason 0x{e.FaultRecordReason:x2}");
Check(e.FaultMsisWhileMasked == 0 && e.FaultMsisAfterUnmask == 1 && e.FectlAfterReset == VtdRegister.EventControlIm,
    $"embedding: fault MSIs {e.FaultMsisWhileMasked} while FECTL.IM (power-on value), {e.FaultMsisAfterUnmask} once unmasked; FECTL 0x{e.FectlAfterReset:x} after Reset");
Check(e.IgnoredAccesses == 2, $"embedding: {e.IgnoredAccesses} ignored register accesses");

GuestDriverDoc.Run(Check);

// docs/vtd-image-format.md
(Iommu.VtD.Diagnostics.VtdImage image, Iommu.VtD.Diagnostics.VtdImage probed, Iommu.VtD.Diagnostics.VtdImage parsed, Iommu.VtD.Diagnostics.VtdImage unitImage) = ImageFormatDoc.Run();
Iommu.VtD.Diagnostics.VtdProbeResult probe = probed.Probes[0];
Check(probe.IsTranslated && probe.PhysicalAddress == 0x8000_0000 && probe.Writable && probed.RootTable >= 0x100_0000 && probed.RootTable < 0x300_0000,
    $"vtd-image: relocated probe {probe.Status} to 0x{probe.PhysicalAddress:x}, root table at 0x{probed.RootTable:x}");
Check(parsed.Chunks.Count == probed.Chunks.Count && parsed.Probes.Count == 1 && parsed.RtAddr == probed.RtAddr && unitImage.RtAddr == image.RtAddr,
    $"vtd-image: JSON round trip of {parsed.Chunks.Count} chunks; the unit's and the driver's export start at RTADDR 0x{image.RtAddr:x}");

// "Readers must ignore unknown members": ours does, at the top level, in a chunk and in a probe.
string extended = Iommu.VtD.Diagnostics.VtdImageJson.ToJson(probed).Replace("\"format\"", "\"x-vendor\": {\"a\": [1]}, \"format\"", StringComparison.Ordinal)
    .Replace("\"kind\"", "\"x-note\": \"n\", \"kind\"", StringComparison.Ordinal)
    .Replace("\"requester\"", "\"x-seq\": 7, \"requester\"", StringComparison.Ordinal);
Iommu.VtD.Diagnostics.VtdImage tolerant = Iommu.VtD.Diagnostics.VtdImageJson.FromJson(extended);
Check(tolerant.Chunks.Count == probed.Chunks.Count && tolerant.Probes.Count == 1 && tolerant.Probes[0] == probed.Probes[0] && tolerant.RtAddr == probed.RtAddr,
    "vtd-image: the reader ignores unknown members");

// docs/metrics.md
long maps = MetricsDoc.Run();
Check(maps == 2, $"metrics: iommu.map.operations = {maps}");

// docs/sva-and-pasid.md
SvaGuideDoc.Outcome s = SvaGuideDoc.Run();
Check(s.PasidEnabled && s.AtsEnabled && s.PriEnabled, "sva: the driver enabled PASID, ATS and PRI when it attached the device's default domain");
Check(s.SvaTwice == Errno.EBUSY && !s.SvaReportedEnabled && s.IopfWithoutPri == Errno.ENODEV,
    $"sva: enabling SVA again {s.SvaTwice}, dev_feat_enabled(SVA) {s.SvaReportedEnabled}, IOPF without PRI {s.IopfWithoutPri}");
Check(s.SvaOnSecondLevelUnit == Errno.ENODEV, $"sva: enabling SVA behind a unit without first-level translation {s.SvaOnSecondLevelUnit}");
Check(s.Pasid == 1 && s.HandlePasid == s.Pasid && s.CpuPa == 0x1_0000_1000, $"sva: the process's PASID {s.Pasid}; its page 0 at 0x{s.CpuPa:x}");
Check(s.SvaEntry.StartsWith("PGTT=first-level DID 1 ", StringComparison.Ordinal) && s.FlptrIsPgd, $"sva: PASID entry \"{s.SvaEntry}\", FLPTR = the process's CR3 {s.FlptrIsPgd}");
Check(s.SameHandleTwice && s.StillBoundAfterOneUnbind, "sva: binding the pair again returns the same handle; one unbind leaves it bound");
Check(s.Hit.Status == DmaStatus.Ok && s.Hit.Address == s.CpuPa && s.HitAgain.Status == DmaStatus.Ok && s.SeenByCpu.StartsWith("written by the CPU|", StringComparison.Ordinal),
    $"sva: the device read \"written by the CPU\" at 0x{s.Hit.Address:x}, the CPU's page 0x{s.CpuPa:x}");
Check(s.FirstTouch.Status == DmaStatus.PageRequestPending && s.AfterResponse.Status == DmaStatus.Ok && s.SeenByCpu.EndsWith("|from the device", StringComparison.Ordinal),
    $"sva: untouched page {s.FirstTouch.Status}, after the response {s.AfterResponse.Status}; the CPU reads what the device wrote");
Check(s.Outside.Status == DmaStatus.PageRequestPending && s.OutsideAgain.Status == DmaStatus.PageRequestFailed && s.PageRequestsReported == 2,
    $"sva: outside every mapping {s.Outside.Status}, then {s.OutsideAgain.Status} (Invalid Request); iommu.faults page_request = {s.PageRequestsReported}");
Check(s.AtcBeforeMunmap == 2 && s.AtcAfterMunmap == 1 && s.IotlbInvalidations == 1 && s.AfterMunmap.Status == DmaStatus.PageRequestFailed
    && s.PlainAfterMunmap.Status == DmaStatus.Fault && s.PlainAfterMunmap.FaultReason.Code == 0x71,
    $"sva: munmap: ATC {s.AtcBeforeMunmap} -> {s.AtcAfterMunmap}, {s.IotlbInvalidations} PASID-IOTLB invalidation; then {s.AfterMunmap.Status}, untranslated {s.PlainAfterMunmap.FaultReason}");
Check(s.AfterUnbind.Status == DmaStatus.Fault && s.AfterUnbind.FaultReason.Code == 0x59 && s.PasidAfterUnbind == IommuCore.PasidInvalid,
    $"sva: after unbind {s.AfterUnbind.FaultReason}, iommu_sva_get_pasid 0x{s.PasidAfterUnbind:x}");
Check(s.PasidDma.Status == DmaStatus.Ok && s.PasidDma.Address == 0x1_8000_0010 && s.PasidAttachAgain == Errno.EBUSY && s.PasidZero == Errno.EBUSY
    && s.PasidDmaAfterDetach.Status == DmaStatus.Fault && s.PasidDmaAfterDetach.FaultReason.Code == 0x59,
    $"pasid attach: PASID {s.GlobalPasid} DMA at 0x{s.PasidDma.Address:x}, again {s.PasidAttachAgain}, PASID 0 {s.PasidZero}, after detach {s.PasidDmaAfterDetach.FaultReason}");
Check(s.PasidAttachEntry.StartsWith("PGTT=second-level", StringComparison.Ordinal) && s.DefaultDomainKept && s.PasidWhileAttached != s.GlobalPasid && s.PasidWhileAttached != IommuCore.PasidInvalid && s.GlobalPasid == s.Pasid,
    $"pasid attach: entry \"{s.PasidAttachEntry}\", default domain kept {s.DefaultDomainKept}, PASID {s.GlobalPasid} reused from the unbind, {s.PasidWhileAttached} allocated while attached");
Check(s.QueueDma.Status == DmaStatus.Ok && s.QueueDma.Address == s.CpuPa && s.QueueReleased,
    $"uacce: queue PASID {s.QueuePasid} read app's page at 0x{s.QueueDma.Address:x}; released on close");

Console.WriteLine(failures == 0 ? "every snippet behaved" : $"{failures} snippet check(s) failed");
return failures == 0 ? 0 : 1;
