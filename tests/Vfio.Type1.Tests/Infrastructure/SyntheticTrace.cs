using System.Text.Json;

namespace Vfio.Type1.Tests.Infrastructure;

/// <summary>Trace files written for the tests (same schema as the recorded trace), under <c>Traces/</c> next to the test assembly.</summary>
internal static class SyntheticTrace
{
    private static readonly Dictionary<string, JsonDocument> s_docs = [];

    public static IEnumerable<object[]> CaseNames(string file) =>
        Load(file).RootElement.GetProperty("cases").EnumerateArray().Select(c => new object[] { c.GetProperty("name").GetString()! }).ToList();

    public static JsonElement Case(string file, string name) =>
        Load(file).RootElement.GetProperty("cases").EnumerateArray().First(c => c.GetProperty("name").GetString() == name);

    private static JsonDocument Load(string file)
    {
        lock (s_docs)
        {
            if (!s_docs.TryGetValue(file, out JsonDocument? doc))
            {
                doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Traces", file)));
                s_docs[file] = doc;
            }

            return doc;
        }
    }
}
