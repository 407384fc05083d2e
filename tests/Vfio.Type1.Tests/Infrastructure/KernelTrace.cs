using System.Text.Json;

namespace Vfio.Type1.Tests.Infrastructure;

/// <summary>
/// A kernel trace file of the <c>vfio-type1-kernel-trace/1</c> schema to replay: the file named by
/// <c>KERNEL_TRACE</c>, or else <c>shared/conformance/kernel-type1/trace-public.json</c> found above the
/// test assembly, or else the copy of that file this project carries (<c>Traces/trace-public.json</c>).
/// A trace that cannot be found is a failure when <c>KERNEL_TRACE</c> names it or under
/// <c>CI=true</c>, and a reported skip otherwise.
/// </summary>
internal sealed class KernelTrace
{
    public const string RelativePath = "shared/conformance/kernel-type1/trace-public.json";

    /// <summary>The environment variable naming a trace file to replay instead of the public one.</summary>
    public const string PathVariable = "KERNEL_TRACE";

    /// <summary>The marker "case" the theory gets when there is no trace to enumerate.</summary>
    public const string NotFoundCase = "<kernel trace not found>";

    private static readonly Lazy<KernelTrace> s_default = new(() => FromEnvironment(Environment.GetEnvironmentVariable, AppContext.BaseDirectory));

    private readonly Lazy<JsonDocument?> _doc;

    private KernelTrace(string? path, string description, bool missingIsFailure)
    {
        Path = path;
        Description = description;
        MissingIsFailure = missingIsFailure;
        _doc = new(() => Path is not null && File.Exists(Path) ? JsonDocument.Parse(File.ReadAllBytes(Path)) : null);
    }

    /// <summary>The trace of this test run (process environment, test assembly directory).</summary>
    public static KernelTrace Default => s_default.Value;

    /// <summary>The trace file, or null when none was found.</summary>
    public string? Path { get; }

    /// <summary>Where the trace was looked for, for messages.</summary>
    public string Description { get; }

    /// <summary>True when a missing trace must fail the run rather than be reported as skipped.</summary>
    public bool MissingIsFailure { get; }

    /// <summary>The parsed trace, or null when the file does not exist.</summary>
    public JsonDocument? Document => _doc.Value;

    /// <summary>Resolves the trace from an environment (<c>KERNEL_TRACE</c>, <c>CI</c>) and the directory to search upwards from.</summary>
    public static KernelTrace FromEnvironment(Func<string, string?> env, string baseDirectory)
    {
        bool ci = string.Equals(env("CI"), "true", StringComparison.OrdinalIgnoreCase);
        string? explicitPath = env(PathVariable);
        if (!string.IsNullOrEmpty(explicitPath))
        {
            string full = System.IO.Path.GetFullPath(explicitPath);
            return new KernelTrace(full, $"{PathVariable}={full}", missingIsFailure: true);
        }

        // The shared copy when the checkout sits beside shared/, else the copy this project carries
        // (Traces/trace-public.json, the same file) so a clone without shared/ still replays it.
        string carried = System.IO.Path.Combine(baseDirectory, "Traces", "trace-public.json");
        string? found = FindAbove(baseDirectory) ?? (File.Exists(carried) ? carried : null);
        return new KernelTrace(found, $"{RelativePath} above {baseDirectory}, or {carried}", missingIsFailure: ci);
    }

    /// <summary>A trace at an explicit path (what <c>KERNEL_TRACE</c> does, without the process environment).</summary>
    public static KernelTrace FromFile(string path) => FromEnvironment(n => n == PathVariable ? path : null, AppContext.BaseDirectory);

    public static string? FindAbove(string baseDirectory)
    {
        for (DirectoryInfo? d = new(baseDirectory); d is not null; d = d.Parent)
        {
            string p = System.IO.Path.Combine(d.FullName, RelativePath);
            if (File.Exists(p))
            {
                return p;
            }
        }

        return null;
    }

    public IEnumerable<object[]> CaseNames()
    {
        JsonDocument? doc = Document;
        if (doc is null)
        {
            yield return [NotFoundCase];
            yield break;
        }

        foreach (JsonElement c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            yield return [c.GetProperty("name").GetString()!];
        }
    }

    public JsonElement? Case(string name)
    {
        JsonDocument? doc = Document;
        if (doc is null)
        {
            return null;
        }

        foreach (JsonElement c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            if (c.GetProperty("name").GetString() == name)
            {
                return c;
            }
        }

        return null;
    }
}
