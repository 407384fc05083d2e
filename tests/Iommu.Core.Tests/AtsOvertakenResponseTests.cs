using Iommu.Devices;

namespace Iommu.Core.Tests;

/// <summary>
/// A device's page request races its own retry: the translation request of a retry can be refused just before
/// the fault is fixed, and the Success response can then arrive before the device looks at it. The device must
/// translate again rather than send a second page request for a page that is already fixed (the tour's section 6
/// counted a sixth request on a loaded machine). A fake unit stages the window deterministically.
/// </summary>
public sealed class AtsOvertakenResponseTests
{
    private const ulong Page = 0x7f00_0000_1000;
    private const ulong Frame = 0x40_0000;

    // Refuses until the page is "fixed"; on the refusal it is told to, it fixes the page and answers the
    // outstanding group while the translation request is still in flight (the overtaking response).
    private sealed class Unit : IDmaRemapper, IDmaRemapperAts
    {
        public bool Fixed;
        public bool AnswerDuringNextRefusal;
        public int PageRequests;
        public int Translations;
        public int LastGroup = -1;

        public DmaResult DmaRead(PciDevice device, uint? pasid, ulong iova, Span<byte> destination) =>
            throw new InvalidOperationException("untranslated DMA is not used here");

        public DmaResult DmaWrite(PciDevice device, uint? pasid, ulong iova, ReadOnlySpan<byte> source) =>
            throw new InvalidOperationException("untranslated DMA is not used here");

        public AtsCompletion TranslationRequest(PciDevice device, uint? pasid, ulong address, bool write)
        {
            Translations++;
            if (Fixed)
            {
                return new AtsCompletion(true, Frame, 4096, true, true, DmaFaultReason.None);
            }

            if (AnswerDuringNextRefusal)
            {
                // The refusal is decided (tables read), then the worker fixes the page and responds.
                AnswerDuringNextRefusal = false;
                Fixed = true;
                device.ReceivePageGroupResponse(pasid, LastGroup, 0);
            }

            return new AtsCompletion(true, 0, 4096, false, false, DmaFaultReason.None);
        }

        public bool PageRequest(PciDevice device, PageRequestMessage request)
        {
            PageRequests++;
            LastGroup = request.GroupIndex;
            return true;
        }
    }

    // A platform whose one ATS+PRI device translates through the fake unit.
    private static Platform DeviceBehind(out Unit unit, out PciDevice dev)
    {
        var platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.MiB, TableMemorySize = 16 * Sizes.MiB });
        PciBus pci = platform.AddPciBus();
        unit = new Unit();
        pci.AddDmaRemapper(unit, includeAll: true);
        dev = pci.AddDevice(new PciDeviceSpec("0000:00:05.0") { PasidWidth = 20, Ats = true, Pri = true });
        Assert.Equal(Errno.None, dev.EnableAts());
        Assert.Equal(Errno.None, dev.EnablePri());
        return platform;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_refusal_overtaken_by_the_pages_success_response_is_translated_again_not_asked_again(bool write)
    {
        using Platform platform = DeviceBehind(out Unit unit, out PciDevice dev);
        byte[] buf = new byte[16];
        DmaResult Access() => write ? dev.AtsDmaWrite(1, Page, buf) : dev.AtsDmaRead(1, Page, buf);

        // First access: refused, one page request.
        Assert.Equal(DmaStatus.PageRequestPending, Access().Status);
        Assert.Equal(1, unit.PageRequests);

        // The retry's translation is refused, and the Success response lands before the device checks.
        unit.AnswerDuringNextRefusal = true;
        DmaResult r = Access();
        Assert.Equal(DmaStatus.Ok, r.Status);
        Assert.Equal(Frame, r.Address);
        Assert.Equal(1, unit.PageRequests);
        Assert.Equal(3, unit.Translations); // refused, refused (overtaken), translated
    }

    [Fact]
    public void A_page_still_refused_after_its_success_response_is_asked_for_again()
    {
        using Platform platform = DeviceBehind(out Unit unit, out PciDevice dev);
        byte[] buf = new byte[16];

        Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaRead(1, Page, buf).Status);
        dev.ReceivePageGroupResponse(1, unit.LastGroup, 0); // Success, but the page stays refused
        Assert.Equal(DmaStatus.PageRequestPending, dev.AtsDmaRead(1, Page, buf).Status);
        Assert.Equal(2, unit.PageRequests);
    }
}
