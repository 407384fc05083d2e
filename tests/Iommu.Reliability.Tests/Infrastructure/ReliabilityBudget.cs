using System.Globalization;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>
/// How much work the reliability tests do. CI runs the defaults (each at least 10^5 operations or
/// inputs where the issue asks for that); <c>RELIABILITY_OPS</c> raises the operation count and
/// <c>RELIABILITY_SEED</c> replays one seed.
/// </summary>
internal static class ReliabilityBudget
{
    /// <summary>Default operation / input budget per property when RELIABILITY_OPS is not set.</summary>
    public const long DefaultOps = 100_000;

    /// <summary>The operation budget: RELIABILITY_OPS when set and larger than zero, else <see cref="DefaultOps"/>.</summary>
    public static long Ops
    {
        get
        {
            string? s = Environment.GetEnvironmentVariable("RELIABILITY_OPS");
            return long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long n) && n > 0 ? n : DefaultOps;
        }
    }

    /// <summary>A fixed seed unless RELIABILITY_SEED names another, so a CI failure replays exactly.</summary>
    public static ulong Seed(ulong fallback)
    {
        string? s = Environment.GetEnvironmentVariable("RELIABILITY_SEED");
        return ulong.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out ulong v) ? v : fallback;
    }
}
