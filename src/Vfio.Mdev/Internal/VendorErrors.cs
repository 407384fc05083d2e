using Iommu;

namespace Vfio.Mdev.Internal;

/// <summary>How the mdev core reports a vendor callback's failure.</summary>
internal static class VendorErrors
{
    // The vendor's own reason, when it recorded one for this errno, is the cause; else ours.
    public static Errno KeepOrFail(Errno ret, string detail) =>
        ErrorDetail.LastErrno == ret ? ret : ErrorDetail.Fail(ret, detail);
}
